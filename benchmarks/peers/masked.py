"The masked-forward methods of `fast_cam.masked` against pytorch-grad-cam's `AblationCAM` and torchcam's `SSCAM` and `ISCAM`."
import copy, numpy as np, torch
import pytorch_grad_cam as pgc
import torchcam.methods as tcm
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from peers import Case
from peers.family import pgc_cam

def pgc_ablation_raw(m, layer, x, t, bs=32):
    "pytorch-grad-cam's Ablation-CAM at feature resolution, ReLU'd, before its upsampling and scaling"
    m = copy.deepcopy(m)
    l = m.get_submodule(layer)
    cam = pgc.AblationCAM(model=m, target_layers=[l], batch_size=bs)
    try:
        with torch.no_grad(): cam.activations_and_grads(x)
        acts = cam.activations_and_grads.activations[0].cpu().numpy()
        res = cam.get_cam_image(x, l, [ClassifierOutputTarget(c) for c in t], acts, None)
        return torch.from_numpy(np.maximum(res, 0))
    finally: cam.activations_and_grads.release()

def torchcam_cam(cls, **kw):
    "A `make_peer` for torchcam's class `cls`: its maps at feature resolution, as it returns them, one target per image"
    def make(m, layer, x, t):
        ext = cls(m, target_layer=layer, input_shape=tuple(x.shape[1:]), **kw)
        def f():
            with torch.no_grad(): out = m(x)
            return ext(class_idx=t, scores=out)[0]
        return f
    return make

CASES = [
    Case('ablationcam', 'ablationcam', 'pytorch-grad-cam', pgc_cam(pgc.AblationCAM), dict(bar=False), n=1),
    # 4 noisy or scaled copies of each of the 512 masks (the defaults, 35 and 10, cost 9x and 2.5x as much on both sides)
    Case('sscam', 'sscam', 'torchcam', torchcam_cam(tcm.SSCAM, num_samples=4), dict(bar=False, n_samples=4), n=1),
    Case('iscam', 'iscam', 'torchcam', torchcam_cam(tcm.ISCAM, num_samples=4), dict(bar=False, n_samples=4), n=1),
]
