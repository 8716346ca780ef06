"The meta-methods (Finer-CAM, RefineCAM, LayerCAM's fusion, SESS) against pytorch-grad-cam's and torchcam's, on three architectures."
import copy, warnings, pytest, torch, numpy as np
import pytorch_grad_cam as pgc
import torchcam.methods as tcm
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from fast_cam.all import *
from conftest import rel_err, tv_model, tv_x, torchcam_raw, nonzero, PEER_TARGETS

# each architecture's layer, and layers of three resolutions for the multi-layer methods
ARCHS = {'resnet18': ('layer4', ['layer2','layer3','layer4']),
         'densenet121': ('features.denseblock4', ['features.denseblock2','features.denseblock3','features.denseblock4']),
         'vgg11_bn': ('features.27', ['features.13','features.20','features.27']),
         'mobilenet_v3_small': ('features.12', ['features.4','features.8','features.12'])}
SZ = 64
# logits times 1e12: a random mobilenet's gradients (about 1e-10) are far below the peers' epsilons (1e-8), which would
# then decide the normalised maps; both sides get the same scaled scores, and the formulas do not depend on the scale
SCALE = 1e12

def scaled(t):
    "The target: class `t[i]`'s logit times `SCALE` for item `i`"
    return lambda o: SCALE*o[torch.arange(len(o)), torch.tensor(t)]

@pytest.fixture(scope='module', params=list(ARCHS))
def arch(request):
    name = request.param
    return name, tv_model(name), tv_x(SZ), *ARCHS[name]

def pgc_scaled(ours, hw):
    "Our maps as pytorch-grad-cam returns its own: scaled to [0,1], upsampled to the input, scaled again"
    return scale01(upsample(scale01(ours), hw))

def test_finer_torchcam(arch):
    "weighting='mean' (γ=0.6, three nearest classes) is torchcam's `FinerCAM`"
    name,m,x,l,_ = arch
    ref = torchcam_raw(tcm.FinerCAM, m, l, x, base_method=tcm.GradCAM)
    ours = explain(m, x, 'finercam', target=PEER_TARGETS, layer=l)
    nonzero(ref); assert rel_err(ours, ref.float()) < 1e-5

def test_finer_pgc(arch):
    "weighting='softmax', gamma=1 is pytorch-grad-cam's `FinerCAM` (its default α=1); the paper's weighting differs"
    name,m,x,l,_ = arch
    mc = copy.deepcopy(m)
    cam = pgc.FinerCAM(mc, [mc.get_submodule(l)], base_method=pgc.GradCAM)
    ref = torch.from_numpy(cam(x)).float()
    ours = explain(m, x, 'finercam', layer=l, weighting='softmax', gamma=1.)
    nonzero(ref); assert rel_err(pgc_scaled(ours, SZ), ref) < 1e-5
    if name=='resnet18': assert rel_err(pgc_scaled(explain(m, x, 'finercam', layer=l, gamma=1.), SZ), ref) > 1e-3

def test_refine_torchcam(arch):
    "the product of min-max scaled Grad-CAM++ maps of three layers is torchcam's `RefineCAM`"
    name,m,x,_,ls = arch
    ls = ls[1:]  # at 64 px a random resnet's Grad-CAM of layer2 can be all zero, and so the product
    # over Grad-CAM: torchcam's Grad-CAM++ departs from eq. 19 (it sums A·g³ over positions), see the family's tests
    t = m(x).argmax(1).tolist()  # the predicted classes: products of maps of other classes are often zero
    ref = torchcam_raw(tcm.RefineCAM, m, ls, x, targets=t, scale=SCALE, base_method=tcm.GradCAM)
    ours = explain(m, x, 'refinecam', target=scaled(t), layer=ls, base='gradcam')
    nonzero(ref); assert rel_err(ours, ref.float()) < 1e-5

def test_refine_direct():
    "RefineCAM is the product of each layer's `explain` map, min-max scaled and upsampled; `layer=None`: the last three stages that reach 7 cells"
    m,x = tv_model('resnet18', torch.float32),tv_x(SZ, torch.float32)
    ls = ARCHS['resnet18'][1]
    ms = [min_max_scale(explain(m, x, 'gradcampp', layer=l), 1e-8) for l in ls]
    ref = ms[0]*upsample(ms[1], ms[0].shape[-2:])*upsample(ms[2], ms[0].shape[-2:])
    nonzero(ref)
    assert rel_err(explain(m, x, 'refinecam', layer=ls), ref) < 1e-5
    dl = ['relu','layer1','layer2']  # at 64 px layer3 (4x4) and layer4 (2x2) fall below MIN_SIDE
    assert [module_name(m, l) for l in stage_layers(m, x)] == dl
    assert rel_err(explain(m, x, 'refinecam'), explain(m, x, 'refinecam', layer=dl)) < 1e-6

def test_layercam_fused_torchcam(arch):
    "norm='minmax' is torchcam's `LayerCAM.fuse_cams` of its normalised maps; the paper's eq. 9 divides by the max only"
    name,m,x,_,ls = arch
    mc = copy.deepcopy(m)
    ext = tcm.LayerCAM(mc, target_layer=ls, input_shape=tuple(x.shape[1:]))
    try: ref = ext.fuse_cams(ext(class_idx=PEER_TARGETS, scores=mc(x)*SCALE)).detach().float()
    finally: ext.remove_hooks()
    ours = explain(m, x, 'layercam_fused', target=scaled(PEER_TARGETS), layer=ls, norm='minmax')
    nonzero(ref); assert rel_err(ours, ref) < 1e-5

def test_layercam_fused_eq9():
    "eq. 9 (norm='max') differs from torchcam's min-max scaling where a map's minimum is not 0"
    m,x = tv_model('resnet18', torch.float32),tv_x(SZ, torch.float32)
    M = explain(m, x, 'layercam', layer='layer4')
    assert rel_err(explain(m, x, 'layercam_fused', layer=['layer4']), torch.tanh(2*M/M.amax((1,2), keepdim=True))) < 1e-6
    if (M.amin((1,2))>0).any():
        assert rel_err(explain(m, x, 'layercam_fused', layer=['layer4'], norm='minmax'),
                       explain(m, x, 'layercam_fused', layer=['layer4'])) > 1e-4

@pytest.mark.parametrize('name,l,smooth', [('resnet18','layer4',True), ('vgg11_bn','features.27',True),
                                            ('mobilenet_v3_small','features.12',False)])
def test_sess_pgc(name, l, smooth):
    "3 scales, non-overlapping windows, mean pooling (and the blur): pytorch-grad-cam's `SESS`, on three architectures"
    m,x = tv_model(name),tv_x(SZ)
    mc = copy.deepcopy(m)
    cam = pgc.SESS(mc, [mc.get_submodule(l)], base_method=pgc.GradCAM, num_scales=3, smooth=smooth)
    ref = torch.from_numpy(cam(x)).float()
    ours = explain(m, x, 'sess', layer=l, smooth=smooth)
    nonzero(ref); assert rel_err(scale01(ours), ref) < 1e-5

def test_layercam_fused_one_layer_torchcam():
    "torchcam's `fuse_cams` returns a single layer's map unscaled (no tanh); fast_cam applies eq. 9 to one layer too"
    m,x = tv_model('resnet18'),tv_x(SZ)
    mc = copy.deepcopy(m)
    ext = tcm.LayerCAM(mc, target_layer=['layer4'], input_shape=tuple(x.shape[1:]))
    try: cams = ext(class_idx=PEER_TARGETS, scores=mc(x)*SCALE); ref = ext.fuse_cams(cams).detach().float()
    finally: ext.remove_hooks()
    nonzero(ref)
    assert rel_err(ref, cams[0].float()) < 1e-6, 'torchcam fuses one layer as the identity'
    ours = explain(m, x, 'layercam_fused', target=scaled(PEER_TARGETS), layer=['layer4'], norm='minmax')
    assert rel_err(ours, torch.tanh(2*ref)) < 1e-5 and rel_err(ours, ref) > 1e-3

@pytest.mark.parametrize('kind', ['timm', 'torchvision'])
@pytest.mark.parametrize('method', ['layercam_fused', 'refinecam'])
def test_multilayer_default_on_vits(kind, method):
    "On a ViT the default layers are the last three blocks' norm1 (ln_1): the maps are not empty, and equal passing them"
    import timm
    from torchvision.models import VisionTransformer
    torch.manual_seed(0)
    if kind=='timm':
        m = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=64, num_classes=3, depth=4).eval()
        norms = [b.norm1 for b in m.blocks]
    else:
        m = VisionTransformer(64, 8, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3).eval()
        torch.nn.init.normal_(m.heads.head.weight, std=.5)  # torchvision zero-initialises the head
        norms = [b.ln_1 for b in m.encoder.layers]
    x = torch.randn(2, 3, 64, 64)
    mp = explain(m, x, method)
    assert (mp.amax((1,2)) > 0).all()
    assert torch.equal(mp, explain(m, x, method, layer=norms[-3:]))

def _timm_small(name, **kw):
    import timm
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=3, **kw).eval()

@pytest.mark.parametrize('method', ['layercam_fused', 'refinecam'])
def test_multilayer_default_class_token_models(method):
    "Models whose last stages' patch tokens reach no output (PiT, XCiT) or whose first blocks have no class token (CaiT)"
    from fast_cam.meta import stage_layers
    x,x224 = torch.randn(2, 3, 64, 64),torch.randn(2, 3, 224, 224)  # PiT's last stage reaches 7 cells at 224 px only
    pit = _timm_small('pit_ti_224', depth=[1, 1, 1])
    cait = _timm_small('cait_xxs24_224', img_size=64, depth=3, depth_token_only=1)
    xcit = _timm_small('xcit_nano_12_p16_224', img_size=64, depth=3, cls_attn_layers=2)
    want = {pit: pit.transformers[-1].blocks[-1].norm1, cait: cait.blocks[-1], xcit: xcit.cls_attn_blocks[-1].norm1}
    for m,last in want.items():
        xb = x224 if m is pit else x
        ls = stage_layers(m, xb)
        assert ls[-1] is last, [module_name(m, l) for l in ls]
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # no layer whose patch tokens reach no output
            mp = explain(m, xb, method, **({'max_channels': 8} if method=='refinecam' else {}))
        assert mp.shape[0]==2 and torch.isfinite(mp).all()
        assert torch.equal(mp, explain(m, xb, method, layer=ls, **({'max_channels': 8} if method=='refinecam' else {})))

def test_reaches_output_layer_outside_autograd():
    "A layer whose output is computed outside autograd (as in VOLO) tells nothing: the probe says so, it does not raise"
    from fast_cam.meta import _reaches_output
    class NoGrad(torch.nn.Module):
        def forward(self, x):
            with torch.no_grad(): return x*1
    nn = torch.nn
    m = nn.Sequential(nn.Conv2d(3, 4, 3), NoGrad(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.randn(1, 3, 16, 16)
    assert _reaches_output(m, x, m[1]) is True and _reaches_output(m, x, m[0]) is False
