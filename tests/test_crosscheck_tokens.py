"LeGrad against torchcam's on torchvision ViTs and against a direct computation on timm ViTs; attention rollout against a direct computation on timm ViT, DeiT (distilled) and torchvision ViT."
import warnings, pytest, torch, timm
from torch import nn
import torch.nn.functional as F
from torchvision.models.vision_transformer import VisionTransformer
from torchcam.methods import LeGrad as TCLeGrad
from fast_cam.all import *
from conftest import rel_err

def tv_vit(**kw):
    torch.manual_seed(0)
    m = VisionTransformer(image_size=64, num_classes=5, **kw).eval()
    nn.init.normal_(m.heads.head.weight, std=.5)  # torchvision zero-initialises the head: all gradients would be zero
    return m

def timm_vit(name):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, img_size=64, num_classes=5).eval()

TV = {'p16_d2': dict(patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128),
      'p8_d3':  dict(patch_size=8, num_layers=3, num_heads=4, hidden_dim=32, mlp_dim=64)}
TIMM = ['vit_tiny_patch16_224', 'deit_tiny_distilled_patch16_224']

@pytest.fixture(scope='module')
def xb(): return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

@pytest.mark.parametrize('cfg', list(TV))
@pytest.mark.parametrize('blocks', ['all', 'last'])
def test_legrad_torchcam(cfg, blocks, xb):
    m = tv_vit(**TV[cfg])
    bl = list(m.encoder.layers) if blocks=='all' else list(m.encoder.layers)[-1:]
    ours = explain(m, xb, 'legrad', target=[1, 3], layer=None if blocks=='all' else 'last')
    with TCLeGrad(m, bl) as ex: ref = ex([1, 3], m(xb), normalized=False)[0]
    assert ours.shape==ref.shape and ref.abs().max()>0
    assert rel_err(ours, ref) < 1e-5

def _eager_attns(m, xb):
    "Reference: timm's eager attention read at `attn_drop`, with the gradient of each block's own score"
    attns,zs = [],[]
    hs = [b.attn.attn_drop.register_forward_hook(lambda mod,i,o: attns.append(o)) for b in m.blocks]
    hs += [b.register_forward_hook(lambda mod,i,o: zs.append(o)) for b in m.blocks]
    for b in m.blocks: b.attn.fused_attn = False
    try:
        with torch.enable_grad(): out = m(xb)
    finally:
        for h in hs: h.remove()
        for b in m.blocks: b.attn.fused_attn = True
    return attns,zs,out

@pytest.mark.parametrize('name', TIMM)
def test_legrad_timm(name, xb):
    m = timm_vit(name)
    attns,zs,out = _eager_attns(m, xb)
    c = out.argmax(1)
    e = m.num_prefix_tokens
    es = []
    for a,z in zip(attns, zs):
        zm = z.mean(1, keepdim=True).expand_as(z)  # the mean token through the final norm and head
        s = m.forward_head(m.norm(zm)).gather(1, c[:,None]).sum()
        g = torch.autograd.grad(s, a, retain_graph=True)[0]  # the full graph: no cut needed for the reference
        es.append(F.relu(g).mean((1, 2))[:, e:])
    ref = torch.stack(es).mean(0).reshape(2, 4, 4)
    assert rel_err(explain(m, xb, 'legrad'), ref) < 1e-5

def _rollout_ref(attns, e, fusion='mean', ratio=0.):
    "Direct attention rollout, one item at a time, as jacobgil's vit-explain with rows renormalised"
    res = []
    for i in range(attns[0].shape[0]):
        T = attns[0].shape[-1]
        r = torch.eye(T)
        for a in attns:
            a = getattr(a[i], {'mean':'mean', 'max':'amax', 'min':'amin'}[fusion])(0).clone()
            flat = a.view(-1)
            idx = flat.topk(int(T*T*ratio), largest=False).indices
            flat[idx[idx!=0]] = 0
            a = (a + torch.eye(T))/2
            r = (a / a.sum(-1, keepdim=True)) @ r
        res.append(r[0, e:])
    return torch.stack(res)

def _tv_attns(m, xb):
    "torchvision's per-head attention weights, asked for by a pre-hook"
    attns = []
    pre = lambda mod,a,kw: (a, {**kw, 'need_weights': True, 'average_attn_weights': False})
    hs = [b.self_attention.register_forward_pre_hook(pre, with_kwargs=True) for b in m.encoder.layers]
    hs += [b.self_attention.register_forward_hook(lambda mod,i,o: attns.append(o[1])) for b in m.encoder.layers]
    try:
        with torch.no_grad(): m(xb)
    finally:
        for h in hs: h.remove()
    return attns

MODELS = {'vit_tiny': lambda: timm_vit(TIMM[0]), 'deit_tiny_distilled': lambda: timm_vit(TIMM[1]),
          'torchvision': lambda: tv_vit(**TV['p8_d3'])}

@pytest.mark.parametrize('opts', [dict(), dict(head_fusion='max', discard_ratio=.5), dict(head_fusion='min', discard_ratio=.2)])
@pytest.mark.parametrize('name', list(MODELS))
def test_rollout(name, opts, xb):
    m = MODELS[name]()
    if name=='torchvision': attns,e = _tv_attns(m, xb),1
    else:
        with torch.no_grad(): attns,e = _eager_attns(m, xb)[0],m.num_prefix_tokens
    ref = _rollout_ref([a.detach() for a in attns], e, opts.get('head_fusion', 'mean'), opts.get('discard_ratio', 0.))
    ours = explain(m, xb, 'rollout', **opts)
    assert ours.shape[0]==2 and rel_err(ours.flatten(1), ref) < 1e-5

def test_refusals(xb):
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    for meth in ('legrad', 'rollout'):
        with pytest.raises(LayerError, match='gradcam'): explain(cnn, xb, meth)
    m = timm_vit(TIMM[0])
    with pytest.raises(CAMError, match='head_fusion'): explain(m, xb, 'rollout', head_fusion='median')
    with pytest.raises(CAMError, match='pool'): explain(m, xb, 'legrad', pool='cls')
    with pytest.raises(LayerError, match='transformer block'): explain(m, xb, 'legrad', layer='head')
    assert all(b.attn.fused_attn for b in m.blocks)  # the fused attention is back after each call

def test_legrad_vision_learner(dls):
    "fastai's `vision_learner` over a timm ViT: LeGrad reads each block's scores through the ViT's norm and fastai's head"
    import copy
    from fastai.vision.all import vision_learner
    torch.manual_seed(0)
    learn = vision_learner(dls, 'vit_tiny_patch16_224', pretrained=False, img_size=64, patch_size=16, depth=3)
    xb = dls.one_batch()[0][:2].as_subclass(torch.Tensor)
    ours = learn.heatmap(xb, method='legrad', target=[0, 1])
    # the same network as one timm model: the ViT with fastai's head as its own
    net = copy.deepcopy(learn.model[0].model).eval(); net.head = copy.deepcopy(learn.model[1]).eval()
    with torch.no_grad(): assert rel_err(net(xb), learn.model.eval()(xb)) < 1e-6
    ref = explain(net, xb, 'legrad', target=[0, 1])
    assert ours.shape==(2, 4, 4) and ref.abs().max()>0 and rel_err(ours, ref) < 1e-5
    for wrapped in (nn.Sequential(nn.Identity(), net), nn.Sequential(net, nn.Softmax(1))[::-1]):
        with pytest.raises(LayerError, match='vision_learner'): explain(wrapped, xb, 'legrad')

def test_refuses_channel_attention(xb):
    "XCiT's blocks attend across channels ([n, heads, c, c]), not tokens: LeGrad and rollout refuse, naming what to use"
    m = timm.create_model('xcit_nano_12_p16_224', pretrained=False, img_size=64, depth=2, cls_attn_layers=1, num_classes=5).eval()
    for meth in ('legrad', 'rollout'):
        with pytest.raises(LayerError, match="between a vision transformer's tokens.*gradcam"): explain(m, xb, meth)

def test_refuses_mask_unit_attention(xb):
    "Hiera's `MaskUnitAttention` has no eager attention to read: LeGrad and rollout refuse it, naming what to use"
    m = timm.create_model('hiera_tiny_224', pretrained=False, num_classes=5).eval()
    x = torch.randn(1, 3, 224, 224)
    for meth in ('legrad', 'rollout'):
        with pytest.raises(LayerError, match='gradcam'): explain(m, x, meth)
