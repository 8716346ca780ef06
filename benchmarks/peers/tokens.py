"The token-model methods of `fast_cam.tokens` against their peers: LeGrad against torchcam's (torchvision ViTs only)."
from torchcam.methods import LeGrad
from peers import Case

def tc_legrad(m, layer, x, t):
    "torchcam's LeGrad over every encoder block (fast_cam's `layer=None`), one target per image"
    ex = LeGrad(m, list(m.encoder.layers))
    return lambda: ex(t, m(x), normalized=False)

CASES = [Case('legrad', 'legrad', 'torchcam', tc_legrad, model='vit_b_16', layer=None, n=4)]
