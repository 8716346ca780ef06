"FullGrad, ShapleyCAM and the ReST target against pytorch-grad-cam, after its scaling (upsample to the input, min-max)."
import copy, pytest, torch, numpy as np, torchvision.models as tvm
import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, ClassifierOutputReST
from fast_cam.all import *
from conftest import rel_err, nonzero, _randomise_bn

ARCHS = {'resnet18':'layer4', 'vgg11_bn':'features.28', 'mobilenet_v3_small':'features.12',
         'densenet121':'features.denseblock4'}
TARGETS = [1, 7]

def _model(name):
    torch.manual_seed(0)
    return _randomise_bn(getattr(tvm, name)(weights=None, num_classes=10).eval())

def _x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 64)

def pgc_scale(maps, eps=1e-7):
    "pytorch-grad-cam's `scale_cam_image` per map, without the resize"
    t = maps - maps.amin((-2,-1), keepdim=True)
    return t/(t.amax((-2,-1), keepdim=True)+eps)

def _peer(cls, m, layer, x, targets):
    m = copy.deepcopy(m)
    cam = cls(model=m, target_layers=[] if layer is None else [m.get_submodule(layer)])
    with torch.enable_grad(): return torch.from_numpy(cam(input_tensor=x.clone(), targets=targets))

@pytest.mark.parametrize('arch', ['resnet18', 'vgg11_bn', 'mobilenet_v3_small'])  # densenet121 too: 4.2e-6
def test_fullgrad_vs_pgc(arch):
    m,x = _model(arch),_x()
    ours = pgc_scale(explain(m, x, 'fullgrad', target=TARGETS))
    theirs = _peer(pgc.FullGrad, m, None, x, [ClassifierOutputTarget(c) for c in TARGETS])
    nonzero(ours); e = rel_err(ours, theirs)
    print(f'{arch}: fullgrad rel err vs pytorch-grad-cam {e:.2e}')
    assert e<=1e-5

def _up(maps, x): return upsample(maps, x.shape[-2:])

# mobilenet_v3_small is left out: there even Grad-CAM differs from pytorch-grad-cam's by 4e-3 after the scaling
@pytest.mark.parametrize('arch', ['resnet18', 'vgg11_bn', 'densenet121'])
@pytest.mark.parametrize('rest', [False, True])
def test_shapleycam_vs_pgc(arch, rest):
    m,x,name = _model(arch),_x(),ARCHS[arch]
    t = ReST(TARGETS) if rest else TARGETS
    ours = pgc_scale(_up(explain(m, x, 'shapleycam', target=t, layer=name), x))
    pt = [(ClassifierOutputReST if rest else ClassifierOutputTarget)(c) for c in TARGETS]
    theirs = _peer(pgc.ShapleyCAM, m, name, x, pt)
    nonzero(ours); e = rel_err(ours, theirs)
    print(f'{arch} rest={rest}: shapleycam rel err vs pytorch-grad-cam {e:.2e}')
    # float32 round-off of the second-order term: 1.2e-5 on resnet18 with ReST
    assert e<=(2e-5 if rest and arch=='resnet18' else 1e-5)

def test_rest_is_pgc_rest():
    "`ReST(c)` scores every item as pytorch-grad-cam's `ClassifierOutputReST(c)` scores one"
    torch.manual_seed(0); z = torch.randn(2, 10)
    test = torch.stack([ClassifierOutputReST(c)(o) for c,o in zip(TARGETS, z)])
    assert rel_err(ReST(TARGETS)(z), test) <= 1e-6

class _HSig(torch.nn.Module):
    def forward(self, x): return torch.nn.functional.hardtanh(x, -3., 3.)/6 + .5  # hardsigmoid, written out

def test_shapleycam_through_hardsigmoid():
    "MobileNetV3's squeeze-excite gate is a hardsigmoid, whose backward torch cannot differentiate: pytorch-grad-cam's ShapleyCAM raises; fast_cam's equals the model with the gate written out"
    m,x,name = _model('mobilenet_v3_small'),_x(),'features.3'
    ref = copy.deepcopy(m)
    for nm,o in list(ref.named_modules()):
        if isinstance(o, torch.nn.Hardsigmoid): ref.set_submodule(nm, _HSig())
    ours = explain(m, x, 'shapleycam', target=ReST(TARGETS), layer=name)
    nonzero(ours)
    assert rel_err(ours, explain(ref, x, 'shapleycam', target=ReST(TARGETS), layer=name)) < 1e-5
    with pytest.raises(RuntimeError, match='hardsigmoid'):
        _peer(pgc.ShapleyCAM, m, name, x, [ClassifierOutputReST(c) for c in TARGETS])

class _PixelConv(torch.nn.Module):
    "A biased conv run on every 8×8 patch as its own item (TNT's pixel embedding), beside a CNN"
    def __init__(self, net): super().__init__(); self.net,self.px = net,torch.nn.Conv2d(3, 4, 3, padding=1)
    def forward(self, x):
        n = len(x)
        p = torch.nn.functional.unfold(x, 8, stride=8).transpose(1, 2).reshape(-1, 3, 8, 8)  # [n·patches, 3, 8, 8]
        return self.net(x) + self.px(p).reshape(n, -1).mean(1, keepdim=True)

def test_fullgrad_leaves_out_per_patch_layers():
    "A biased layer whose output is not a map of the items (TNT) is left out with a warning, not a raw size error"
    m,x = _PixelConv(_model('resnet18')).eval(),_x()
    with pytest.warns(UserWarning, match='leaves out 1 biased layers'): mp = explain(m, x, 'fullgrad', target=TARGETS)
    assert mp.shape==(2, 64, 64) and torch.isfinite(mp).all()
