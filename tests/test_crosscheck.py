"Grad-CAM and guided backprop against independent implementations: captum and torchcam."
import copy, pytest, torch, torchvision.models as tvm
from torch import nn
from captum.attr import LayerGradCam, GuidedBackprop as CaptumGB
from torchcam.methods import GradCAM as TorchcamGradCAM
from fast_cam.all import *
from conftest import rel_err

ARCHS = {'resnet18':'layer4', 'densenet121':'features.denseblock4', 'mobilenet_v3_small':'features.12',
         'efficientnet_b0':'features.8', 'convnext_tiny':'features.7', 'vgg11_bn':'features.28'}
TARGETS = [1, 7]

def _model(name):
    torch.manual_seed(0)
    return getattr(tvm, name)(weights=None, num_classes=10).eval()

def _x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 128, 128)

@pytest.mark.parametrize('arch', list(ARCHS))
def test_gradcam_vs_captum_and_torchcam(arch):
    m,x,name = _model(arch),_x(),ARCHS[arch]
    ours = explain(m, x, 'gradcam', target=TARGETS, layer=name)
    cap = LayerGradCam(m, m.get_submodule(name)).attribute(x, target=TARGETS, relu_attributions=True)[:,0].detach()
    m2 = copy.deepcopy(m)
    ext = TorchcamGradCAM(m2, target_layer=name)
    try: tc = ext(class_idx=TARGETS, scores=m2(x), normalized=False)[0].detach()
    finally: ext.remove_hooks()
    assert ours.shape==cap.shape==tc.shape
    assert ours.max()>0, 'a map of zeros would make the comparison meaningless'
    e_cap,e_tc = rel_err(ours, cap),rel_err(ours, tc)
    print(f'{arch}: rel err vs captum {e_cap:.2e}, vs torchcam {e_tc:.2e}')
    assert e_cap<=1e-5 and e_tc<=1e-5

@pytest.mark.parametrize('arch', ['resnet18', 'vgg11_bn'])
def test_guided_backprop_vs_captum(arch):
    m,x = _model(arch),_x()
    ours = explain(m, x, 'guided_backprop', target=TARGETS)
    cap = CaptumGB(copy.deepcopy(m)).attribute(x.clone(), target=TARGETS).detach()
    e = rel_err(ours, cap)
    print(f'{arch}: guided backprop rel err vs captum {e:.2e}')
    assert ours.abs().max()>0 and e<=1e-5

def test_guided_backprop_is_not_the_plain_gradient():
    "The guided rule must change something, or the cross-check above would pass for a plain gradient"
    m,x = _model('resnet18'),_x()
    ours = explain(m, x, 'guided_backprop', target=TARGETS)
    xx = x.clone().requires_grad_()
    plain = torch.autograd.grad(m(xx)[[0,1],TARGETS].sum(), xx)[0]
    assert rel_err(ours, plain) > 0.1
