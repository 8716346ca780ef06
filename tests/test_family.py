"The Grad-CAM family and Score-CAM against pytorch-grad-cam and torchcam, at feature resolution before normalisation where the peer allows it."
import copy, pytest, torch, numpy as np, torchvision.models as tvm
import torch.nn.functional as F
import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
import torchcam.methods as tcm
from fast_cam.all import *
from conftest import rel_err

# post-ReLU layers: the activations these methods are defined on (the XGrad-CAM and Grad-CAM++ papers assume A >= 0)
ARCHS = {'resnet18':'layer4', 'densenet121':'features.denseblock4.denselayer16.relu1', 'mobilenet_v3_small':'features.3.block.1'}
TARGETS = [2, 5]

def _model(name, dt=torch.float64):
    "Float64 so that the comparison measures the formulas, not float32 rounding in ill-conditioned divisions"
    torch.manual_seed(0)
    return getattr(tvm, name)(weights=None, num_classes=10).eval().to(dt)

def _x(sz=96, dt=torch.float64):
    torch.manual_seed(1)
    return torch.randn(2, 3, sz, sz, dtype=dt)

SCALE = 1e12

class Scaled(ClassifierOutputTarget):
    "The class logit times `s`: gradients well above the peers' epsilons (1e-6 in pytorch-grad-cam's Grad-CAM++)"
    def __init__(self, c, s): super().__init__(c); self.s = s
    def __call__(self, o): return super().__call__(o)*self.s

def pgc_raw(cls, m, name, x, targets=TARGETS, scale=1.):
    "pytorch-grad-cam's map at feature resolution, from its own hooks and backward, before its resize and scaling"
    m = copy.deepcopy(m)
    layer = m.get_submodule(name)
    cam = cls(model=m, target_layers=[layer])
    try:
        outs = cam.activations_and_grads(x.clone().requires_grad_())
        ts = [Scaled(t, scale) for t in targets]
        if cam.uses_gradients: sum(t(o) for t,o in zip(ts, outs)).backward()
        a = cam.activations_and_grads.activations[0].numpy()
        g = cam.activations_and_grads.gradients[0].numpy() if cam.uses_gradients else None
        raw = cam.get_cam_image(x, layer, ts, a, g, False)
    finally: cam.activations_and_grads.release()
    return torch.from_numpy(np.maximum(raw, 0)).float()

def torchcam_raw(cls, m, name, x, targets=TARGETS, scale=1., **kw):
    m = copy.deepcopy(m)
    ext = cls(m, target_layer=name, **kw)
    try: return ext(class_idx=targets, scores=m(x)*scale, normalized=False)[0].detach()
    finally: ext.remove_hooks()

def _nonzero(o): assert o.abs().max()>0, 'a map of zeros would make the comparison meaningless'

@pytest.mark.parametrize('arch', list(ARCHS))
@pytest.mark.parametrize('meth,pcls,tcls', [('xgradcam', pgc.XGradCAM, tcm.XGradCAM), ('layercam', pgc.LayerCAM, tcm.LayerCAM),
                                            ('hirescam', pgc.HiResCAM, None), ('gradcampp', pgc.GradCAMPlusPlus, None)])
def test_family_vs_peers(arch, meth, pcls, tcls):
    m,x,name = _model(arch),_x(),ARCHS[arch]
    # the first pair of classes whose maps are not all zero (deterministic: fixed seeds)
    for tg in ([2,5],[0,1],[3,7],[4,9],[6,8]):
        ours = explain(m, x, meth, target=lambda o: SCALE*o[[0,1],tg], layer=name)
        if (ours.flatten(1).amax(1)>0).all(): break
    _nonzero(ours)
    e = rel_err(ours, pgc_raw(pcls, m, name, x, tg, scale=SCALE))
    print(f'{arch} {meth}: rel err vs pytorch-grad-cam {e:.2e}')
    # pytorch-grad-cam adds 1e-7 to XGrad-CAM's channel sums, some as small as 2.5e-3 on the untrained mobilenet
    assert e<=(1e-4 if meth=='xgradcam' else 1e-5)
    if tcls is not None:
        e = rel_err(ours, torchcam_raw(tcls, m, name, x, tg, scale=SCALE))
        print(f'{arch} {meth}: rel err vs torchcam {e:.2e}')
        assert e<=1e-5

@pytest.mark.parametrize('arch', list(ARCHS))
def test_gradcampp_vs_torchcam_documented_difference(arch):
    "torchcam's Grad-CAM++ keeps alpha = g^2 (its masked in-place division runs on a copy): ours with that alpha equals it"
    m,x,name = _model(arch),_x(),ARCHS[arch]
    tc = torchcam_raw(tcm.GradCAMpp, m, name, x)
    c = capture(m, x, [m.get_submodule(name)], TARGETS)
    a,g = c.acts[0],c.grads[0]
    as_torchcam = F.relu(torch.einsum('nk,nkhw->nhw', (g.pow(2)*F.relu(g)).sum((2,3)), a))
    _nonzero(tc)
    assert rel_err(as_torchcam, tc) <= 1e-5
    assert rel_err(explain(m, x, 'gradcampp', target=TARGETS, layer=name), tc) > 1e-3, 'the paper and torchcam do differ here'

@pytest.mark.parametrize('arch', list(ARCHS))
def test_eigencam_vs_pytorch_grad_cam(arch):
    "Same principal component; pytorch-grad-cam's sign is whatever the SVD gives, ours is fixed"
    m,x,name = _model(arch),_x(),ARCHS[arch]
    ours = explain(m, x, 'eigencam', layer=name)
    c = capture(m, x, [m.get_submodule(name)], grad=False)
    proj = torch.from_numpy(get_2d_projection(c.acts[0].numpy().copy()))
    for i in range(len(x)):
        _nonzero(ours[i])
        e = min(rel_err(ours[i], F.relu(proj[i])), rel_err(ours[i], F.relu(-proj[i])))
        assert e<=1e-4, e
    # deterministic sign: the map correlates positively with the channel sum
    cs = c.acts[0].sum(1).flatten(1)
    assert all(torch.corrcoef(torch.stack([o.flatten(), s]))[0,1] > 0 for o,s in zip(ours, cs))

def test_hirescam_equals_cam_on_gap_linear():
    m,x = _model('resnet18'),_x()
    cm = explain(m, x, 'cam', target=TARGETS)
    assert rel_err(explain(m, x, 'hirescam', target=TARGETS, layer='last'), F.relu(cm)/cm[0].numel()) < 1e-5

@pytest.mark.parametrize('arch', list(ARCHS))
def test_scorecam_vs_torchcam(arch):
    # densenet121: the first layer of the last dense block (512 channels, post-ReLU) rather than the last (992): half the masked forwards
    # float32: Score-CAM's softmax of scores is well conditioned, and the hundreds of masked forwards cost half as much as in float64
    m,x,name = _model(arch, torch.float32),_x(64, torch.float32),ARCHS[arch] if arch!='densenet121' else 'features.denseblock4.denselayer1.relu1'
    ours = explain(m, x, 'scorecam', target=TARGETS, layer=name, bs=64)
    tc = torchcam_raw(tcm.ScoreCAM, m, name, x, batch_size=64)
    _nonzero(ours)
    e = rel_err(min_max_scale(ours), min_max_scale(tc))
    print(f'{arch} scorecam: rel err vs torchcam (min-max scaled) {e:.2e}')
    assert e<=1e-4

def test_multilayer_fusion():
    m,x = _model('resnet18'),_x()
    l3,l4 = explain(m, x, 'layercam', target=TARGETS, layer='layer3'),explain(m, x, 'layercam', target=TARGETS, layer='layer4')
    fused = explain(m, x, 'layercam', target=TARGETS, layer=['layer3','layer4'])
    assert fused.shape==l3.shape
    assert torch.allclose(fused, torch.maximum(l3, upsample(l4, l3.shape[-2:])), atol=1e-6)
    mean = explain(m, x, 'layercam', target=TARGETS, layer=[[6],[7]] if False else ['layer3','layer4'], fuse='mean')
    assert torch.allclose(mean, (l3+upsample(l4, l3.shape[-2:]))/2, atol=1e-6)
    with pytest.raises(CAMError, match='fuse'): explain(m, x, 'layercam', layer=['layer3','layer4'], fuse='median')

@pytest.mark.parametrize('method', ['gradcampp','xgradcam','layercam','hirescam','eigencam','scorecam'])
def test_family_promises(learn, cam_learn, files, method):
    "State untouched, batch = items and no_grad for every new method"
    from conftest import snapshot, assert_same
    # the first learner, targets and layer whose maps are not all zero (XGrad-CAM's map can be all negative on a random head)
    for learn,tg,l in [(lr,t,l) for lr in (learn,cam_learn) for l in (None,[0,6]) for t in ([0,1,0,1],[1,0,1,0],[1,1,0,0])]:
        m = learn.model.train(); s = snapshot(m)
        with torch.no_grad(): b = learn.heatmap(files, method=method, target=tg, layer=l)
        assert_same(m, s)
        if b.abs().max()>0: break
    items = torch.cat([learn.heatmap(files[i], method=method, target=t, layer=l) for i,t in enumerate(tg)])
    assert b.abs().max()>0 and rel_err(b, items) < 1e-5
    if get_method(method).supports_all:  # one map per class, equal to one call per class (tests/test_multilabel.py covers the rest)
        allm = learn.heatmap(files[:2], method=method, target='all', layer=l)
        assert allm.shape[:2]==(2, len(learn.dls.vocab))
        assert rel_err(allm[:,1], learn.heatmap(files[:2], method=method, target=1, layer=l)) < 1e-5
    else:
        with pytest.raises(TargetError, match='supported by'): learn.heatmap(files, method=method, target='all')

def test_smoothgrad(learn, files):
    torch.manual_seed(0)
    sg = learn.guided_backprop(files, n_samples=8)
    gb = learn.guided_backprop(files)
    assert sg.shape==gb.shape and not torch.allclose(sg, gb)
    torch.manual_seed(0)
    assert torch.equal(sg, learn.guided_backprop(files, n_samples=8))
    assert torch.allclose(learn.guided_backprop(files, n_samples=3, noise=0.), gb, atol=1e-6), 'no noise: the plain guided gradients'

def test_scorecam_options(learn, files):
    ex = learn.heatmap(files, method='scorecam', target=1)
    for sel in ('taylor','variance','gradcam'):
        for fill in ('min','mean','zero'):
            fm = learn.heatmap(files, method='scorecam', target=1, max_channels=16, select=sel, fill=fill)
            assert fm.shape==ex.shape and torch.isfinite(fm).all()
    assert torch.allclose(learn.heatmap(files, method='scorecam', target=1, max_channels=512), ex, atol=1e-6)
    with pytest.raises(CAMError, match='select'): learn.heatmap(files, method='scorecam', max_channels=4, select='random')
    with pytest.raises(CAMError, match='fill'): learn.heatmap(files, method='scorecam', max_channels=4, fill='median')

@pytest.mark.parametrize('method,kw', [('gradcam',{}), ('layercam',{}), ('scorecam',{'max_channels':32})])
def test_aug_smooth(learn, files, method, kw):
    from conftest import snapshot, assert_same
    m = learn.model; s = snapshot(m)
    xb = to_batch(learn, files)
    for t in (0,1):  # the first class with a map that is not all zero on this random model
        sm = learn.heatmap(xb, method=method, target=t, aug_smooth=True, **kw)
        if sm.abs().max()>0: break
    assert sm.shape==(len(files),64,64) and sm.abs().max()>0
    flipped = learn.heatmap(xb.flip(-1), method=method, target=t, aug_smooth=True, **kw)
    assert rel_err(flipped, sm.flip(-1)) < 1e-4, 'maps are mapped back to the original frame'
    assert not torch.allclose(sm, upsample(learn.heatmap(xb, method=method, target=t, **kw), 64)), 'the augmentations change something'
    assert_same(m, s)
