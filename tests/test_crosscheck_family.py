"The Grad-CAM family's later rules against pytorch-grad-cam (element-wise, Eigen-Grad-CAM, FEM, KPCA-CAM, Random-CAM, `eigen_smooth`) and Smooth Grad-CAM++ against torchcam, at feature resolution before any scaling, on three architectures."
import copy, pytest, torch, numpy as np
from torch import nn
import torch.nn.functional as F
import pytorch_grad_cam as pgc
import torchcam.methods as tcm
from fast_cam.all import *
import conftest
from conftest import err_up_to_sign, rel_err, PEER_ARCHS, PEER_TARGETS, tv_model, tv_x, nonzero, pgc_acts_grads

SCALE = 1e12  # gradients well above pytorch-grad-cam's epsilons (1e-6 in Grad-CAM++, 1e-7 in XGrad-CAM)


def scaled(o): return SCALE*o[torch.arange(len(o)), torch.tensor(PEER_TARGETS).repeat(len(o)//len(PEER_TARGETS))]

@pytest.fixture(scope='module', params=list(PEER_ARCHS))
def arch(request):
    "A float64 model, its layer and a batch of two, with pytorch-grad-cam's activations and gradients of the scaled targets"
    name = request.param
    m,x,layer = tv_model(name),tv_x(),PEER_ARCHS[name]
    pm,a,g = pgc_acts_grads(m, x, layer, SCALE)
    return dict(name=name, m=m, x=x, layer=layer, a=a, g=g, pm=pm)

def pgc_raw(cls, d, eigen_smooth=False, **kw): return conftest.pgc_raw(cls, d, SCALE, eigen_smooth, **kw)

def ours(d, meth, **kw): return explain(d['m'], d['x'], meth, target=scaled, layer=d['layer'], **kw)

def test_elementwise(arch):
    o = ours(arch, 'gradcam_elementwise')
    nonzero(o)
    e = rel_err(o, F.relu(pgc_raw(pgc.GradCAMElementWise, arch)))
    print(f"{arch['name']} gradcam_elementwise: rel err vs pytorch-grad-cam {e:.2e}")
    assert e<=1e-5

def test_eigengradcam(arch):
    "Same component as pytorch-grad-cam's (its sign is the SVD's); ours is oriented along HiResCAM's map"
    o = ours(arch, 'eigengradcam')
    e = err_up_to_sign(o, pgc_raw(pgc.EigenGradCAM, arch))
    print(f"{arch['name']} eigengradcam: rel err vs pytorch-grad-cam (up to sign) {e:.2e}")
    assert e<=1e-5
    hr = (torch.from_numpy(arch['g']*arch['a'])).sum(1).flatten(1)
    assert all(torch.corrcoef(torch.stack([p.flatten(), h.float()]))[0,1] > 0 for p,h in zip(o, hr))

@pytest.mark.parametrize('meth,cls', [('gradcam', pgc.GradCAM), ('gradcampp', pgc.GradCAMPlusPlus), ('xgradcam', pgc.XGradCAM),
                                      ('layercam', pgc.LayerCAM), ('hirescam', pgc.HiResCAM),
                                      ('gradcam_elementwise', pgc.GradCAMElementWise)])
def test_eigen_smooth(arch, meth, cls):
    "eigen_smooth: the first component of the (per-channel or per-position) weighted activations, up to the SVD's sign"
    e = err_up_to_sign(ours(arch, meth, eigen_smooth=True), pgc_raw(cls, arch, eigen_smooth=True))
    print(f"{arch['name']} {meth} eigen_smooth: rel err vs pytorch-grad-cam (up to sign) {e:.2e}")
    # pytorch-grad-cam adds 1e-7 to XGrad-CAM's channel sums (see tests/test_methods.py)
    assert e<=(1e-4 if meth=='xgradcam' else 1e-5)

@pytest.mark.parametrize('k', [2])
def test_fem(arch, k):
    o = explain(arch['m'], arch['x'], 'fem', layer=arch['layer'], k=k)
    nonzero(o)
    e = rel_err(o, F.relu(pgc_raw(pgc.FEM, arch, k=k)))
    print(f"{arch['name']} fem k={k}: rel err vs pytorch-grad-cam {e:.2e}")
    assert e<=1e-5

@pytest.mark.parametrize('kw', [{}, dict(kernel='rbf', gamma=1e-3)])
def test_kpcacam(arch, kw):
    "scikit-learn's KernelPCA makes the eigenvector's largest entry positive, ours correlates with the channel sum: compared up to sign"
    o = explain(arch['m'], arch['x'], 'kpcacam', layer=arch['layer'], **kw)
    e = err_up_to_sign(o, pgc_raw(pgc.KPCA_CAM, arch, **kw))
    print(f"{arch['name']} kpcacam {kw}: rel err vs pytorch-grad-cam (up to sign) {e:.2e}")
    assert e<=1e-5

@pytest.mark.parametrize('eigen_smooth', [False, True])
def test_randomcam(arch, eigen_smooth, monkeypatch):
    "pytorch-grad-cam's Random-CAM fed fast_cam's seeded weights (the same vector for both items) gives fast_cam's map"
    w = RandomCAM().weights(torch.from_numpy(arch['a']), seed=3)
    assert torch.equal(w[0], w[1]) and w.abs().max()<=1 and (w<0).any() and (w>0).any()
    monkeypatch.setattr(np.random, 'uniform', lambda lo, hi, size: w.numpy().reshape(size))
    raw = pgc_raw(pgc.RandomCAM, arch, eigen_smooth=eigen_smooth)
    o = explain(arch['m'], arch['x'], 'randomcam', layer=arch['layer'], seed=3, eigen_smooth=eigen_smooth)
    e = err_up_to_sign(o, raw) if eigen_smooth else rel_err(o, F.relu(raw))
    print(f"{arch['name']} randomcam eigen_smooth={eigen_smooth}: rel err vs pytorch-grad-cam {e:.2e}")
    assert e<=1e-5
    assert not torch.equal(w, RandomCAM().weights(torch.from_numpy(arch['a']), seed=4))

# ---- Smooth Grad-CAM++ against torchcam

class Times(nn.Module):
    "Scales the logits: gradients far above torchcam's epsilon (1e-8), on every noisy copy too"
    def forward(self, o): return o*1e4

class Noise:
    "Stands in for torchcam's noise distribution: hands out fast_cam's noise, one copy per draw"
    def __init__(self, eps): self.eps = list(eps)
    def sample(self, size): return self.eps.pop(0).reshape(size)

N_SAMPLES = 3

@pytest.fixture(scope='module')
def smooth(arch):
    "torchcam's map with fast_cam's noise, and fast_cam's pieces: clean activations, noisy activations and gradients"
    m,x,name = nn.Sequential(arch['m'], Times()).eval(),arch['x'],'0.'+arch['layer']
    xs = SmoothGradCAMpp().noisy(x, N_SAMPLES)
    tm = copy.deepcopy(m)
    ext = tcm.SmoothGradCAMpp(tm, target_layer=name, num_samples=N_SAMPLES, input_shape=tuple(x.shape[1:]))
    ext._distrib = Noise(xs - x)
    try: tc = ext(class_idx=PEER_TARGETS, scores=tm(x), normalized=False)[0].detach()
    finally: ext.remove_hooks()
    l = m.get_submodule(name)
    c0 = capture(m, x, [l], PEER_TARGETS, grad=False)
    c = capture(m, xs.flatten(0,1), [l], PEER_TARGETS*N_SAMPLES)
    return dict(m=m, x=x, name=name, tc=tc, a0=c0.acts[0], a=c.acts[0].unflatten(0, (N_SAMPLES, len(x))),
                g=c.grads[0].unflatten(0, (N_SAMPLES, len(x))))

def paper_weights(s):
    "The paper's weights from fast_cam's captures: the averaged g, g², g³ and the clean activations"
    g1,g2,g3 = (s['g'].pow(p).mean(0) for p in (1,2,3))
    den = 2*g2 + s['a0'].sum((2,3), keepdim=True)*g3
    return (torch.where(den!=0, g2/den, 0.)*F.relu(g1)).sum((2,3))

def smooth_map(s, **kw):
    return explain(s['m'], s['x'], 'smoothgradcampp', target=PEER_TARGETS, layer=s['name'], **{'n_samples':N_SAMPLES, **kw})

def test_smoothgradcampp_paper(smooth):
    "fast_cam's map is the paper's formula on the clean activations; without noise it is Grad-CAM++"
    s = smooth
    paper = F.relu(torch.einsum('nk,nkhw->nhw', paper_weights(s), s['a0']))
    o = smooth_map(s)
    nonzero(o)
    assert rel_err(o, paper)<=1e-5
    gpp = explain(s['m'], s['x'], 'gradcampp', target=PEER_TARGETS, layer=s['name'])
    assert rel_err(smooth_map(s, n_samples=1, std=0.), gpp)<=1e-5

def test_smoothgradcampp_vs_torchcam_departure(smooth, arch):
    """torchcam weighs its LAST noisy copy's activations, not the clean image's. It also takes ReLU of the last copy's gradient
    (not of the average), sums A·g³ over positions in the denominator and adds 1e-8: that formula from fast_cam's capture,
    with fast_cam's noise, is torchcam's map. Where the gradient is constant over positions and copies (resnet18's layer4,
    before GAP → Linear) only the activations differ: fast_cam's weights on the last copy's activations are torchcam's map"""
    s = smooth
    nonzero(s['tc'])
    g2,g3 = s['g'].pow(2).mean(0),s['g'].pow(3).mean(0)
    alpha = g2/(2*g2 + (g3*s['a0']).sum((2,3), keepdim=True) + 1e-8)
    w = (alpha*F.relu(s['g'][-1])).sum((2,3))
    e = rel_err(F.relu(torch.einsum('nk,nkhw->nhw', w, s['a'][-1])), s['tc'])
    print(f"{arch['name']} smoothgradcampp as torchcam computes it: rel err {e:.2e}")
    assert e<=1e-5
    if arch['name']=='resnet18':
        e = rel_err(F.relu(torch.einsum('nk,nkhw->nhw', paper_weights(s), s['a'][-1])), s['tc'])
        print(f"resnet18 smoothgradcampp with the last noisy copy's activations vs torchcam: rel err {e:.2e}")
        assert e<=1e-5
    assert rel_err(smooth_map(s), s['tc'])>1e-3, 'the paper and torchcam do differ here'
