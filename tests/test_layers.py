"`fast_cam.layers`: the automatic layer (its resolution rule on CNNs and fastai's heads), `arch_summary`, and token models (timm ViT, DeiT, Swin) read as maps."
import copy, warnings, pytest, torch, numpy as np
from torch import nn
import torch.nn.functional as F
from torchvision.models import resnet18 as tv_resnet18
from fastai.vision.all import vision_learner, resnet18, ImageDataLoaders, Resize, plt
from fast_cam.all import *
from conftest import snapshot, assert_same, hooks_of, rel_err

def test_default_head(learn, files):
    "fastai's default head: gradcam and guided_gradcam work with the automatic layer (layer2, 8x8 at 64 px); cam raises the helpful error"
    assert cam_layer(learn) is learn.model[0][5] and cam_layer(learn, rule='last') is learn.model[0][7]
    gc = learn.gradcam(files)
    assert gc.shape==(len(files),8,8) and gc.abs().max()>0
    assert torch.equal(gc, learn.gradcam(files, layer=[0,5]))
    last = learn.gradcam(files, layer='last')
    assert last.shape==(len(files),2,2)
    assert torch.equal(last, learn.gradcam(files, layer='0.7'))
    assert torch.equal(last, learn.gradcam(files, layer=learn.model[0][-1]))
    assert learn.guided_gradcam(files).shape==(len(files),3,64,64)
    with pytest.raises(HeadError, match='gradcam'): learn.cam(files)

def test_cam_layer_uses_real_input_size(shapes):
    "At 32 px resnet18's layer4 is 1x1: the last spatial layer is layer3, and the first map of at least 7x7 is layer1's (8x8); at 224 px both are layer4"
    dls = ImageDataLoaders.from_folder(shapes, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=4, num_workers=0)
    l = vision_learner(dls, resnet18, pretrained=False)
    assert cam_layer(l, rule='last') is l.model[0][6]
    assert cam_layer(l) is l.model[0][4]
    assert cam_layer(l, torch.zeros(1,3,224,224)) is l.model[0][7]
    assert cam_layer(l, torch.zeros(1,3,224,224), rule='last') is l.model[0][7]
    assert hooks_of(l.model)==[]

@pytest.mark.parametrize('sz,auto', [(64,'layer2'), (96,'layer2'), (128,'layer3'), (160,'layer3'), (224,'layer4'), (320,'layer4')])
def test_cam_layer_resolution_rule(sz, auto):
    "The automatic layer is the last stage whose map is at least 7 cells a side; 'last' is always layer4"
    m = tv_resnet18(weights=None)
    x = torch.zeros(1,3,sz,sz)
    assert module_name(m, cam_layer(m, x))==auto
    assert cam_layer(m, x, rule='last') is m.layer4
    assert module_name(m, resolve_layer(m, 'last', x))=='layer4'

def test_cam_layer_other_archs():
    "The rule never picks a layer whose map is coarser than an earlier one (vgg's avgpool upsamples 2x2 to 7x7 at 64 px), and never goes inside a residual block"
    from torchvision.models import vgg11_bn, resnet50, efficientnet_b0
    x = torch.zeros(1,3,64,64)
    v = vgg11_bn(weights=None)
    assert cam_layer(v, x, rule='last') is v.avgpool and module_name(v, cam_layer(v, x))=='features.20'
    assert module_name(v, cam_layer(v, torch.zeros(1,3,224,224)))=='avgpool'
    r = resnet50(weights=None)
    assert module_name(r, cam_layer(r, x))=='layer2'
    e = efficientnet_b0(weights=None)
    assert module_name(e, cam_layer(e, x))=='features.3' and module_name(e, cam_layer(e, torch.zeros(1,3,224,224)))=='features'
    with pytest.raises(LayerError, match="'auto' or 'last'"): cam_layer(r, x, rule='first')

def test_cam_layer_keeps_rng():
    "The dry run draws its input from the global generator, and gives the state back"
    m = tv_resnet18(weights=None)
    torch.manual_seed(3); a = torch.rand(3)
    torch.manual_seed(3); cam_layer(m, torch.zeros(1,3,96,96)); b = torch.rand(3)
    assert torch.equal(a, b)

def test_cam_layer_plain_models():
    m = tv_resnet18(weights=None)
    assert cam_layer(m) is m.layer4
    seq = nn.Sequential(nn.Conv2d(3,4,3), nn.ReLU(), nn.Conv2d(4,4,3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4,2))
    assert cam_layer(seq, torch.zeros(1,3,16,16)) is seq[3]

def test_arch_summary(learn, capsys):
    arch_summary(learn)
    out = capsys.readouterr().out
    assert '[0]' in out and '[0, 7]' in out and '8 layers' in out and '<- cam_layer' in out
    assert out.count('<- cam_layer')==1 and '[0, 5]' in [l for l in out.splitlines() if 'cam_layer' in l][0]
    arch_summary(learn, verbose=True)
    assert 'Conv2d(' in capsys.readouterr().out

# ---- token models (timm ViT, DeiT, Swin), bare and inside `vision_learner`: the default layer, reading tokens as maps,
# `reshape=`, and a cross-check against pytorch-grad-cam

def _model(name, **kw):
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, **kw).eval()

# small inputs keep these quick on CPU: a 4×4 patch grid for ViT/DeiT, a 4×4 last stage for Swin
@pytest.fixture(scope='module')
def vit():  return _model('vit_tiny_patch16_224', img_size=64)

@pytest.fixture(scope='module')
def deit(): return _model('deit_tiny_distilled_patch16_224', img_size=64)

@pytest.fixture(scope='module')
def swin(): return _model('swin_tiny_patch4_window7_224', img_size=128, window_size=4)

def _xb(sz, n=2, seed=1):
    torch.manual_seed(seed)
    return torch.randn(n, 3, sz, sz)

@pytest.fixture
def vit_learn(dls):
    pytest.importorskip('timm')
    torch.manual_seed(0)
    return vision_learner(dls, 'vit_tiny_patch16_224', pretrained=False, img_size=64)

def test_token_layer(vit, deit, swin, vit_learn):
    "The default layer is norm1 of the last block, found in bare models and in fastai's TimmBody"
    assert token_layer(vit) is vit.blocks[-1].norm1
    assert token_layer(deit) is deit.blocks[-1].norm1
    assert token_layer(swin) is swin.layers[-1].blocks[-1].norm1
    assert token_layer(vit_learn) is vit_learn.model[0].model.blocks[-1].norm1
    assert cam_layer(vit) is vit.blocks[-1].norm1
    assert cam_layer(vit_learn) is token_layer(vit_learn)
    assert token_layer(nn.Sequential(nn.Conv2d(3,4,3), nn.ReLU())) is None
    assert token_grid(vit)==(4,4) and token_grid(swin)==(32,32) and token_grid(nn.Conv2d(3,4,3)) is None

@pytest.mark.parametrize('stem', [False, True])
def test_token_layer_torchvision(stem):
    "torchvision's ViT (with a patch conv or a conv stem): `ln_1` of the last encoder block, not the patch embedding"
    from torchvision.models.vision_transformer import VisionTransformer, ConvStemConfig
    torch.manual_seed(0)
    cfg = [ConvStemConfig(o, 3, 2) for o in (8,16,16)] if stem else None
    m = VisionTransformer(64, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3, conv_stem_configs=cfg).eval()
    nn.init.normal_(m.heads.head.weight, std=.5)  # torchvision zero-initialises the head
    x = torch.randn(2,3,64,64)
    assert token_layer(m) is m.encoder.layers[-1].ln_1
    assert cam_layer(m, x) is m.encoder.layers[-1].ln_1
    mp = explain(m, x, 'gradcam')
    assert mp.shape==(2,8,8) and mp.amax((1,2)).gt(0).all()

def test_last_block_has_no_patch_gradient(vit):
    "Why norm1: after the last attention, ViT's score ignores the patch tokens, so their gradient is zero there"
    xb = _xb(64)
    out = capture(vit, xb, [vit.blocks[-1], vit.blocks[-1].norm1], 1)
    g_out,g_n1 = out.grads
    assert g_out[:,1:].abs().max()==0 and g_out[:,0].abs().max()>0
    assert g_n1[:,1:].abs().max()>0
    with pytest.warns(UserWarning, match='class'): mp = explain(vit, xb, target=1, layer=vit.norm)  # a natural pick, and a blank map: say so
    assert mp.abs().max()==0

def _pgc_reshape(extra, grid):
    "The reshape_transform of pytorch-grad-cam's ViT tutorial (`extra` leading tokens), or a channels-last permute for Swin"
    if extra is None: return lambda t: t.permute(0,3,1,2)
    return lambda t: t[:,extra:].reshape(t.size(0), *grid, t.size(2)).permute(0,3,1,2)

@pytest.mark.parametrize('name,extra', [('vit',1), ('deit',2), ('swin',None)])
def test_gradcam_matches_pytorch_grad_cam(name, extra, request):
    "Grad-CAM on the default token layer equals pytorch-grad-cam's with its tutorial reshape_transform, raw and after its scaling"
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.image import scale_cam_image
    m = request.getfixturevalue(name)
    sz = 128 if name=='swin' else 64
    xb,tgt = _xb(sz),[1,3]
    ours = explain(m, xb, 'gradcam', target=tgt)
    assert ours.shape==(2,4,4) and ours.dtype==torch.float32
    m2 = copy.deepcopy(m)   # pytorch-grad-cam calls .backward(), which fills .grad: keep it off the shared fixture
    l2 = m2.layers[-1].blocks[-1].norm1 if name=='swin' else m2.blocks[-1].norm1
    with PGCGradCAM(model=m2, target_layers=[l2], reshape_transform=_pgc_reshape(extra, token_grid(m) if extra else None)) as cam:
        theirs = cam(input_tensor=xb, targets=[ClassifierOutputTarget(t) for t in tgt])
        A,G = cam.activations_and_grads.activations[0],cam.activations_and_grads.gradients[0]
    raw = F.relu((G.mean((2,3), keepdim=True)*A).sum(1))  # Grad-CAM from pytorch-grad-cam's own reshaped tensors
    assert rel_err(ours, raw) < 1e-5
    # pytorch-grad-cam min-max scales and resizes each layer's map, then min-max scales their mean again
    scaled = scale_cam_image(scale_cam_image(ours.numpy(), (sz,sz)))
    assert np.abs(scaled-theirs).max() < 1e-5

def test_tokens_dropped(vit, deit, swin):
    "The automatic reading equals an explicit `reshape=` that drops the class (and distillation) tokens"
    for m,extra,sz in ((vit,1,64), (deit,2,64), (swin,None,128)):
        xb = _xb(sz)
        auto = explain(m, xb, target=0)
        manual = explain(m, xb, target=0, reshape=_pgc_reshape(extra, (4,4)))
        assert torch.equal(auto, manual)
        if extra==2:  # dropping only the class token would misplace every patch: the maps must differ
            wrong = lambda t: t[:,1:17].reshape(len(t),4,4,-1).permute(0,3,1,2)
            assert not torch.allclose(auto, explain(m, xb, target=0, reshape=wrong))

@pytest.mark.parametrize('method,kw', [('gradcampp',{}), ('xgradcam',{}), ('layercam',{}), ('hirescam',{}), ('eigencam',{}),
                                       ('scorecam',dict(max_channels=4)), ('guided_gradcam',{})])
def test_every_method(vit, method, kw):
    "Every layer-based method reads the tokens through the same path"
    xb = _xb(64)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # guided backprop warns that ViT has no nn.ReLU (it uses GELU)
        mp = explain(vit, xb, method, target=2, **kw)
    assert mp.shape==((2,3,64,64) if method=='guided_gradcam' else (2,4,4))
    assert mp.dtype==torch.float32 and torch.isfinite(mp).all() and mp.abs().sum()>0

def test_batch_equals_items(vit):
    xb = _xb(64, n=3)
    b = explain(vit, xb, target=[0,1,2])
    items = torch.cat([explain(vit, xb[i:i+1], target=t) for i,t in enumerate([0,1,2])])
    assert (b-items).abs().max() < 1e-5

def test_dynamic_grid():
    "A ViT with `dynamic_img_size` lays its tokens on the grid of the input it gets, non-square included"
    m = _model('vit_tiny_patch16_224', img_size=64, dynamic_img_size=True)
    xb = torch.randn(2, 3, 48, 80)
    assert token_grid(m, (48,80))==(3,5)
    mp = explain(m, xb, target=0)
    assert mp.shape==(2,3,5)
    assert torch.equal(mp, explain(m, xb, target=0, reshape=lambda t: t[:,1:].reshape(len(t),3,5,-1).permute(0,3,1,2)))

def test_cam_on_vit_is_refused(vit):
    "ViT's head is not GAP → Linear: CAM must refuse, not return a wrong map"
    with pytest.raises(HeadError): explain(vit, _xb(64), 'cam')

class Tokens(nn.Module):
    "A toy token model: 8×8 patches of a 40×40 image (5×5 = 25 tokens) behind 3 learned extra tokens, which no rule can guess"
    def __init__(self):
        super().__init__()
        self.proj,self.extra,self.norm,self.fc = nn.Conv2d(3,8,8,8),nn.Parameter(torch.randn(1,3,8)),nn.LayerNorm(8),nn.Linear(8,4)
    def forward(self, x):
        t = self.proj(x).flatten(2).transpose(1,2)
        t = self.norm(torch.cat([self.extra.expand(len(x),-1,-1), t], 1))
        return self.fc(t.mean(1))

def test_unreadable_layouts():
    "Layouts fast_cam cannot read raise a LayerError naming `reshape=`, never a wrong map"
    torch.manual_seed(0)
    m,xb = Tokens().eval(),torch.randn(2,3,40,40)
    with pytest.raises(LayerError, match='reshape='): explain(m, xb, target=0, layer=m.norm)  # 28 tokens: not 0/1/2 + a square
    with pytest.raises(LayerError, match='reshape='): explain(m, xb, target=0, layer=m.fc)    # 2-D output
    f = lambda t: t[:,3:].reshape(len(t),5,5,-1).permute(0,3,1,2)
    mp = explain(m, xb, target=0, layer=m.norm, reshape=f)
    assert mp.shape==(2,5,5)
    with pytest.raises(LayerError, match='reshape='): explain(m, xb, target=0, layer=m.norm, reshape=lambda t: t)  # a bad reshape is caught
    assert hooks_of(m)==[]

def test_attention_internals_refused(vit):
    "A 4-D tensor inside attention (heads × tokens × head dim) is not a map on the patch grid"
    with pytest.raises(LayerError, match='patch grid'): explain(vit, _xb(64), layer=vit.blocks[-1].attn.q_norm)

def test_vision_learner_vit(vit_learn, files, capsys):
    "fastai's vision_learner on a timm ViT: maps, not tokens; `show_gradcam`; `arch_summary` says where the layer is; state untouched"
    learn = vit_learn
    learn.model.train()   # a model left in training mode must come back in training mode
    s = snapshot(learn.model)
    mp = learn.gradcam(files)
    assert mp.shape==(len(files),4,4) and mp.dtype==torch.float32
    assert torch.equal(mp, learn.heatmap(files, reshape=lambda t: t[:,1:].reshape(len(t),4,4,-1).permute(0,3,1,2)))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert learn.guided_gradcam(files[:2]).shape==(2,3,64,64)
    with pytest.raises(LayerError): learn.gradcam(files, reshape=lambda t: t)
    axs = learn.show_gradcam(files[:2], reshape=lambda t: t[:,1:].reshape(len(t),4,4,-1).permute(0,3,1,2))
    assert len(axs)>=2
    with pytest.raises(LayerError, match='reshape='): learn.show_gradcam(files[:2], reshape=lambda t: t[:,1:])
    plt.close('all')
    assert_same(learn.model, s)
    arch_summary(learn)
    out = capsys.readouterr().out
    assert "cam_layer: [0, 0, 4, 11, 0] '0.model.blocks.11.norm1' (LayerNorm)" in out, out
