"The Learner API on fastai models: identities, the automatic layer, inputs, batch consistency (promise 2), precision."
import copy, pytest, torch, numpy as np
from torch import nn
import torch.nn.functional as F
from PIL import Image
from torchvision.models import resnet18 as tv_resnet18
from fastai.vision.all import PILImage, vision_learner, resnet18, ImageDataLoaders, Resize, Learner
from fast_cam.all import *
from conftest import rel_err, _randomise_bn, hooks_of

def test_identity_gap_linear():
    "On GAP → Linear, Grad-CAM = ReLU(CAM)/(h*w) (CAM eq. 2 and Grad-CAM eq. 1)"
    torch.manual_seed(0)
    m = tv_resnet18(weights=None, num_classes=6).eval()
    x = torch.randn(3,3,96,96)
    cm,gc = explain(m, x, 'cam', target=[0,3,5]),explain(m, x, 'gradcam', target=[0,3,5], layer='last')
    assert cm.shape==gc.shape==(3,3,3)
    assert (cm<0).any() and (cm>0).any(), 'CAM is raw: both signs'
    assert rel_err(gc, F.relu(cm)/9) < 1e-5

def test_identity_vision_learner(cam_learn, files):
    "vision_learner(..., concat_pool=False, lin_ftrs=[]): BN1d folded into the linear weights exactly"
    bn = cam_learn.model[1][2]
    assert isinstance(bn, nn.BatchNorm1d) and bn.running_var.std()>0.1
    cm,gc = cam_learn.cam(files),cam_learn.gradcam(files, layer='last')
    assert rel_err(gc, F.relu(cm)/cm[0].numel()) < 1e-5
    # the CAM is the spatial decomposition of the logit: its mean plus the folded bias gives the logit back
    xb = to_batch(cam_learn, files)
    with torch.no_grad(): out = cam_learn.model.eval()(xb)
    W,b = head_weights([o for o in cam_learn.model[1].modules() if not list(o.children())])
    pred = out.argmax(1)
    assert rel_err(cm.mean((1,2)) + b[pred], out[range(len(pred)), pred]) < 1e-5

def test_cam_all(cam_learn, files):
    allc = cam_learn.cam(files, target='all')
    assert allc.shape[:2]==(len(files), 2)
    for c in range(2): assert rel_err(allc[:,c], cam_learn.cam(files, target=c)) < 1e-6

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

def test_get_module(learn):
    m = learn.model
    assert get_module(learn, [0,-1]) is m[0][7] and get_module(m, [-1,-1]) is m[1][-1] and get_module(m, 1) is m[1]
    assert get_module(m, '0.7.1.conv2') is m[0][7][1].conv2 and get_module(m, m[0][3]) is m[0][3]

def test_inputs_agree(learn, files):
    "Paths, str, PIL, numpy, a tensor batch, one [c,H,W] image, a list of tensors and an (xb, yb) tuple give the same maps"
    xb = to_batch(learn, files)
    ref = learn.gradcam(xb)
    assert torch.equal(learn.gradcam(files), ref)
    assert torch.equal(learn.gradcam([str(f) for f in files]), ref)
    ims = [Image.open(f) for f in files]
    assert torch.allclose(learn.gradcam(ims), ref)
    assert all(type(o) is not PILImage for o in ims), "the user's PIL images are not recast"
    assert torch.allclose(learn.gradcam([np.array(Image.open(f)) for f in files]), ref)
    assert torch.allclose(learn.gradcam(list(xb)), ref)
    assert torch.allclose(learn.gradcam((xb, torch.zeros(len(xb)))), ref)
    assert torch.allclose(learn.gradcam(xb[1]), ref[1:2])

def test_one_batch_tuple(learn):
    b = learn.dls.one_batch()
    assert learn.gradcam(b).shape==(len(b[0]),8,8)

def test_with_preds(learn, files):
    maps,probs = learn.gradcam(files, with_preds=True)
    preds,_ = learn.get_preds(dl=learn.dls.test_dl(files))
    assert torch.allclose(probs, preds, atol=1e-5)
    # target None explains the predicted class
    assert torch.allclose(maps, learn.gradcam(files, target=probs.argmax(1)))

METHODS = ['gradcam', 'guided_backprop', 'guided_gradcam']
@pytest.mark.parametrize('method', METHODS + ['cam'])
def test_batch_equals_items(learn, cam_learn, files, method):
    "Promise 2: a batch gives the maps of its items one at a time"
    l = cam_learn if method=='cam' else learn
    xb = to_batch(l, files)
    tg = [1,0,1,0]
    batch = l.heatmap(xb, method=method, target=tg)
    items = torch.cat([l.heatmap(xb[i:i+1], method=method, target=tg[i]) for i in range(len(xb))])
    # float32: the batched and single-item convolutions sum in different orders, and the map cancels (most of it is ReLU-clipped)
    assert batch.abs().max()>0 and rel_err(batch, items) < 1e-4
    # per-item targets, not only item 0's: item 0's class for every item gives other maps
    assert rel_err(batch, l.heatmap(xb, method=method, target=tg[0])) > 1e-2

def test_inplace_relu_after_layer():
    "A layer whose output is changed in place right after it (resnet's `out += identity; relu_(out)`)"
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

@pytest.mark.parametrize('dt', [torch.float16, torch.bfloat16])
def test_half_precision(dt):
    "Half-precision models give float32 maps close to the float32 model's"
    torch.manual_seed(0)
    m = tv_resnet18(weights=None, num_classes=5).eval()
    x = torch.randn(4,3,128,128)
    mh = copy.deepcopy(m).to(dt)
    for meth in METHODS:
        ref,got = explain(m, x, meth, target=[1,2,3,4]),explain(mh, x, meth, target=[1,2,3,4])
        cos = F.cosine_similarity(got.flatten(), ref.flatten(), dim=0)
        assert got.dtype==torch.float32 and ref.abs().max()>0 and cos > (0.999 if dt==torch.float16 else 0.99), (meth, cos)
    assert all(p.dtype==dt for p in mh.parameters())

def test_frozen_train_mode_no_grad(learn, files):
    ref = learn.gradcam(files)
    learn.freeze(); learn.model.requires_grad_(False); learn.model.train()
    with torch.no_grad(): got = learn.gradcam(files)
    assert torch.allclose(got, ref) and learn.model.training
    assert not any(p.requires_grad for p in learn.model.parameters())

def test_multilabel_like_single_logit():
    "A one-logit (binary) model: target 0 explains the logit; a callable explains its negation"
    m = nn.Sequential(nn.Conv2d(3,4,3,padding=1), nn.ReLU(), nn.Conv2d(4,4,3,padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4,1)).eval()
    x = torch.randn(2,3,12,12)
    pos,neg = explain(m, x, target=0, layer='2'),explain(m, x, target=lambda o: -o[:,0], layer='2')
    raw = explain(m, x, 'cam', target=0, layer='2')
    assert rel_err(pos, F.relu(raw)/144) < 1e-5 and rel_err(neg, F.relu(-raw)/144) < 1e-5

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

def test_all_exports_every_module():
    "`from fast_cam.all import *` gives the public API of every module but the command line"
    import importlib, pkgutil, fast_cam, fast_cam.all as A
    mods = [n for _,n,_ in pkgutil.iter_modules(fast_cam.__path__) if not n.startswith('_') and n not in ('all','cli')]
    assert {'callback','metrics','methods','core'} <= set(mods)
    for n in mods:
        missing = [o for o in importlib.import_module(f'fast_cam.{n}').__all__ if o not in A.__all__ or not hasattr(A, o)]
        assert not missing, (n, missing)
