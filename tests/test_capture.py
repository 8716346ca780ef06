"`fast_cam.capture`: the engine's activations and gradients: float32 maps from float64 and autocast models, in-place ops after the layer, no graph before it."
import pytest, torch
import torch.nn.functional as F
from torchvision.models import resnet18 as tv_resnet18
from fast_cam.all import *
from conftest import rel_err, small_cnn, small_x

def test_inplace_relu_after_layer():
    "A layer whose output is changed in place right after it (resnet's `out += identity; relu_(out)`)"
    torch.manual_seed(0)
    m = tv_resnet18(weights=None, num_classes=5).eval()
    x = torch.randn(2,3,64,64)
    ours = explain(m, x, target=[1,2], layer='layer4.1.bn2')
    feats = {}
    def keep(mod, i, o): feats['a'] = o; return o.clone()
    h = m.layer4[1].bn2.register_forward_hook(keep)
    try: out = m(x)
    finally: h.remove()
    a = feats['a']; g = torch.autograd.grad(out[[0,1],[1,2]].sum(), a)[0]
    ref = F.relu((g.mean((2,3))[:,:,None,None]*a).sum(1))
    assert ours.abs().max()>0 and rel_err(ours, ref.detach()) < 1e-5

def test_no_graph_before_the_layer(learn, files):
    "Grad-CAM builds no autograd graph for the layers before the target layer; guided backprop needs one down to the input"
    seen = []
    h = learn.model[0][4].register_forward_hook(lambda m,i,o: seen.append((torch.is_grad_enabled(), o.requires_grad)))
    try:
        learn.gradcam(files)
        assert seen[-1]==(False, False)
        learn.guided_backprop(files)
        assert seen[-1]==(True, True)
    finally: h.remove()

# float64 models give float32 maps
METHODS = ['cam','gradcam','gradcampp','xgradcam','layercam','hirescam','eigencam','scorecam','guided_backprop','guided_gradcam']

@pytest.mark.parametrize('method', METHODS)
def test_float64_model_float32_maps(method):
    m,x = small_cnn(),small_x(2)
    kw = dict(bar=False) if method=='scorecam' else {}
    f32 = explain(m, x, method, target=[1,3], **kw)
    f64 = explain(m.double(), x.double(), method, target=[1,3], **kw)
    assert f64.dtype==torch.float32 and f64.abs().max()>0
    assert rel_err(f64, f32) < 1e-4
    if method=='cam': assert explain(m, x.double(), 'cam', target='all').dtype==torch.float32

# autocast: the weighting and the sum in float32
@pytest.mark.parametrize('method', ['gradcam','gradcampp','layercam','eigencam'])
def test_autocast_float32_maps(method):
    m,x = small_cnn(),small_x(2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        maps = explain(m, x, method, target=[1,3], layer=[3])
        c = capture(m, x, [m[3]], target=[1,3], grad=get_method(method).needs_grad)
    assert c.acts[0].dtype==torch.float32, 'the bf16 activations, converted'
    ref = get_method(method).combine(c.acts[0], None if c.grads is None else c.grads[0])  # outside autocast
    assert maps.dtype==torch.float32 and maps.abs().max()>0
    assert rel_err(maps, ref) < 1e-6

def test_autocast_guided_gradcam():
    m,x = small_cnn(),small_x(2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        maps = explain(m, x, 'guided_gradcam', target=[1,3], layer=[3])
        c = capture(m, x, [m[3]], target=[1,3], guided=True)
    ref = c.xgrad * upsample(GradCAM().combine(c.acts[0], c.grads[0]), x.shape[-2:])[:,None]
    assert maps.dtype==torch.float32 and maps.abs().max()>0 and rel_err(maps, ref) < 1e-6

@pytest.mark.parametrize('method', ['cam','scorecam','guided_backprop','guided_gradcam'])
def test_autocast_other_methods(method):
    m,x = small_cnn(),small_x(2)
    kw = dict(bar=False, max_channels=4) if method=='scorecam' else {}
    with torch.autocast('cpu', dtype=torch.bfloat16): maps = explain(m, x, method, target=[1,3], **kw)
    ref = explain(m, x, method, target=[1,3], **kw)
    assert maps.dtype==torch.float32 and maps.shape==ref.shape
    # close to the float32 model's maps: only the bf16 forward differs (guided gradients flip at a few ReLUs, so compare directions)
    assert F.cosine_similarity(maps.flatten(), ref.flatten(), 0) > 0.95
