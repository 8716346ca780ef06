"`fast_cam.methods`: the CAM identities, and the Grad-CAM family against pytorch-grad-cam and torchcam at feature resolution before normalisation, where the peer allows it."
import copy, pytest, torch, numpy as np
from torch import nn
import torch.nn.functional as F
from torchvision.models import resnet18 as tv_resnet18
import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
import torchcam.methods as tcm
from fast_cam.all import *
from conftest import rel_err, snapshot, assert_same, small_x, PEER_ARCHS, PEER_TARGETS, tv_model, tv_x, torchcam_raw, nonzero

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

# Eigen-CAM on NaN activations
class Sqrt(nn.Module):
    def forward(self, x): return x.sqrt()  # NaN where the conv output is negative

def test_eigencam_nan_activations():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3,8,3,padding=1), Sqrt(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8,2)).eval()
    s = snapshot(m)
    with pytest.raises(CAMError, match='NaN or infinite'): explain(m, small_x(2), 'eigencam', layer=[1])
    assert_same(m, s)

# ---- against the peers

SCALE = 1e12

class Scaled(ClassifierOutputTarget):
    "The class logit times `s`: gradients well above the peers' epsilons (1e-6 in pytorch-grad-cam's Grad-CAM++)"
    def __init__(self, c, s): super().__init__(c); self.s = s
    def __call__(self, o): return super().__call__(o)*self.s

def pgc_raw(cls, m, name, x, targets=PEER_TARGETS, scale=1.):
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

@pytest.mark.parametrize('arch', list(PEER_ARCHS))
@pytest.mark.parametrize('meth,pcls,tcls', [('xgradcam', pgc.XGradCAM, tcm.XGradCAM), ('layercam', pgc.LayerCAM, tcm.LayerCAM),
                                            ('hirescam', pgc.HiResCAM, None), ('gradcampp', pgc.GradCAMPlusPlus, None)])
def test_family_vs_peers(arch, meth, pcls, tcls):
    m,x,name = tv_model(arch),tv_x(),PEER_ARCHS[arch]
    # the first pair of classes whose maps are not all zero (deterministic: fixed seeds)
    for tg in ([2,5],[0,1],[3,7],[4,9],[6,8]):
        ours = explain(m, x, meth, target=lambda o: SCALE*o[[0,1],tg], layer=name)
        if (ours.flatten(1).amax(1)>0).all(): break
    nonzero(ours)
    e = rel_err(ours, pgc_raw(pcls, m, name, x, tg, scale=SCALE))
    print(f'{arch} {meth}: rel err vs pytorch-grad-cam {e:.2e}')
    # pytorch-grad-cam adds 1e-7 to XGrad-CAM's channel sums, some as small as 2.5e-3 on the untrained mobilenet
    assert e<=(1e-4 if meth=='xgradcam' else 1e-5)
    if tcls is not None:
        e = rel_err(ours, torchcam_raw(tcls, m, name, x, tg, scale=SCALE))
        print(f'{arch} {meth}: rel err vs torchcam {e:.2e}')
        assert e<=1e-5

@pytest.mark.parametrize('arch', list(PEER_ARCHS))
def test_gradcampp_vs_torchcam_documented_difference(arch):
    "torchcam's Grad-CAM++ keeps alpha = g^2 (its masked in-place division runs on a copy): ours with that alpha equals it"
    m,x,name = tv_model(arch),tv_x(),PEER_ARCHS[arch]
    tc = torchcam_raw(tcm.GradCAMpp, m, name, x)
    c = capture(m, x, [m.get_submodule(name)], PEER_TARGETS)
    a,g = c.acts[0],c.grads[0]
    as_torchcam = F.relu(torch.einsum('nk,nkhw->nhw', (g.pow(2)*F.relu(g)).sum((2,3)), a))
    nonzero(tc)
    assert rel_err(as_torchcam, tc) <= 1e-5
    assert rel_err(explain(m, x, 'gradcampp', target=PEER_TARGETS, layer=name), tc) > 1e-3, 'the paper and torchcam do differ here'

@pytest.mark.parametrize('arch', list(PEER_ARCHS))
def test_eigencam_vs_pytorch_grad_cam(arch):
    "Same principal component; pytorch-grad-cam's sign is whatever the SVD gives, ours is fixed"
    m,x,name = tv_model(arch),tv_x(),PEER_ARCHS[arch]
    ours = explain(m, x, 'eigencam', layer=name)
    c = capture(m, x, [m.get_submodule(name)], grad=False)
    proj = torch.from_numpy(get_2d_projection(c.acts[0].numpy().copy()))
    for i in range(len(x)):
        nonzero(ours[i])
        e = min(rel_err(ours[i], F.relu(proj[i])), rel_err(ours[i], F.relu(-proj[i])))
        assert e<=1e-4, e
    # deterministic sign: the map correlates positively with the channel sum
    cs = c.acts[0].sum(1).flatten(1)
    assert all(torch.corrcoef(torch.stack([o.flatten(), s]))[0,1] > 0 for o,s in zip(ours, cs))

def test_hirescam_equals_cam_on_gap_linear():
    m,x = tv_model('resnet18'),tv_x()
    cm = explain(m, x, 'cam', target=PEER_TARGETS)
    assert rel_err(explain(m, x, 'hirescam', target=PEER_TARGETS, layer='last'), F.relu(cm)/cm[0].numel()) < 1e-5

def test_multilayer_fusion():
    m,x = tv_model('resnet18'),tv_x()
    l3,l4 = explain(m, x, 'layercam', target=PEER_TARGETS, layer='layer3'),explain(m, x, 'layercam', target=PEER_TARGETS, layer='layer4')
    fused = explain(m, x, 'layercam', target=PEER_TARGETS, layer=['layer3','layer4'])
    assert fused.shape==l3.shape
    assert torch.allclose(fused, torch.maximum(l3, upsample(l4, l3.shape[-2:])), atol=1e-6)
    mean = explain(m, x, 'layercam', target=PEER_TARGETS, layer=[[6],[7]] if False else ['layer3','layer4'], fuse='mean')
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
