"Volumes and clips `[n,c,D,H,W]` (Conv3d models): the gradient family against pytorch-grad-cam and torchcam on torchvision's three video networks, the automatic layer, and the refusals."
import pytest, torch
from torch import nn
import torch.nn.functional as F
import torchvision.models.video as tvv
import pytorch_grad_cam as pgc
import torchcam.methods as tcm
import fastcore.test as fct
from fast_cam.all import *
import conftest
from conftest import err_up_to_sign, rel_err, nonzero, torchcam_raw, PEER_TARGETS, pgc_acts_grads

SCALE = 1e12  # gradients well above pytorch-grad-cam's epsilons (as in test_crosscheck_family.py)
VIDEO = ['r3d_18', 'mc3_18', 'r2plus1d_18']
LAYER = 'layer3'  # at 6 frames of 24 px: a map of 2x3x3, so every axis of the volume is a real one

def scaled(o): return SCALE*o[torch.arange(len(o)), torch.tensor(PEER_TARGETS)]

@pytest.fixture(scope='module', params=VIDEO)
def arch(request):
    "A float64 video network, two clips [2,3,6,24,24], and pytorch-grad-cam's activations and gradients at `LAYER`"
    torch.manual_seed(0)
    m = getattr(tvv, request.param)(weights=None, num_classes=10).eval().double()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6, 24, 24, dtype=torch.float64)
    pm,a,g = pgc_acts_grads(m, x, LAYER, SCALE)
    assert a.ndim==5 and a.shape[2]>1
    return dict(name=request.param, m=m, x=x, a=a, g=g, pm=pm, layer=LAYER)

def pgc_raw(cls, d, eigen_smooth=False): return conftest.pgc_raw(cls, d, SCALE, eigen_smooth)

PGC = {'gradcam': pgc.GradCAM, 'gradcampp': pgc.GradCAMPlusPlus, 'xgradcam': pgc.XGradCAM, 'hirescam': pgc.HiResCAM,
       'layercam': pgc.LayerCAM, 'gradcam_elementwise': pgc.GradCAMElementWise}

@pytest.mark.parametrize('meth', list(PGC))
def test_family_pgc(arch, meth):
    ours = explain(arch['m'], arch['x'], meth, target=scaled, layer=LAYER)
    assert ours.shape==(2, *arch['a'].shape[2:])
    nonzero(ours)
    e = rel_err(ours, F.relu(pgc_raw(PGC[meth], arch)))
    print(f"{arch['name']} {meth} (volumes): rel err vs pytorch-grad-cam {e:.2e}")
    # pytorch-grad-cam adds 1e-7 to XGrad-CAM's channel sums
    assert e<=(1e-4 if meth=='xgradcam' else 1e-5)

def test_eigen_pgc(arch):
    "Eigen-Grad-CAM and eigen_smooth=True on volumes: pytorch-grad-cam's component, up to the SVD's sign"
    e1 = err_up_to_sign(explain(arch['m'], arch['x'], 'eigengradcam', target=scaled, layer=LAYER),
                        pgc_raw(pgc.EigenGradCAM, arch))
    e2 = err_up_to_sign(explain(arch['m'], arch['x'], 'gradcam', target=scaled, layer=LAYER, eigen_smooth=True),
                        pgc_raw(pgc.GradCAM, arch, eigen_smooth=True))
    print(f"{arch['name']} eigengradcam / gradcam eigen_smooth (volumes): {e1:.2e} / {e2:.2e}")
    assert e1<=1e-5 and e2<=1e-5

def test_family_torchcam(arch):
    for meth,cls in (('gradcam', tcm.GradCAM), ('xgradcam', tcm.XGradCAM), ('layercam', tcm.LayerCAM)):
        ref = torchcam_raw(cls, arch['m'], LAYER, arch['x'], scale=SCALE)
        ours = explain(arch['m'], arch['x'], meth, target=scaled, layer=LAYER)
        nonzero(ref)
        e = rel_err(ours, ref.float())
        print(f"{arch['name']} {meth} (volumes): rel err vs torchcam {e:.2e}")
        assert ref.shape==ours.shape and e<=1e-5

def small3d():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3,8,3,padding=1), nn.ReLU(), nn.Conv3d(8,16,3,stride=2,padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16,4)).eval()

def test_volume_api():
    "The automatic layer, target='all', several layers, Smooth Grad-CAM++ and `upsample` to the clip's size"
    m,x = small3d(),torch.randn(2,3,8,16,16)
    mp = explain(m, x)
    assert cam_layer(m, x) is m[3] and mp.shape==(2,4,8,8)
    fct.test_close(explain(m, x, layer=[3]), mp)
    assert explain(m, x, target='all').shape==(2,4,4,8,8)
    fct.test_close(explain(m, x, target='all')[:,1], explain(m, x, target=1))
    assert explain(m, x, layer=[[1],[3]]).shape==(2,8,16,16)
    fct.test_close(explain(m, x, 'smoothgradcampp', n_samples=1, std=0.), explain(m, x, 'gradcampp'))
    up = upsample(mp, x.shape[2:])
    assert up.shape==(2,8,16,16) and up.amax()>0
    for meth in ('eigencam','fem','randomcam'): assert explain(m, x, meth).shape==(2,4,8,8)
    with ModelState(m): pass
    # the user's model is left as it was
    assert not m.training and all(p.grad is None for p in m.parameters())

def test_volume_refusals():
    m,x = small3d(),torch.randn(2,3,8,16,16)
    fct.test_fail(lambda: explain(m, x, 'scorecam'), contains='for volumes or clips [n,c,D,H,W]')
    fct.test_fail(lambda: explain(m, x, 'guided_gradcam'), contains='explains images')
    fct.test_fail(lambda: explain(m, x[0]), contains='as `x[None]`')
    fct.test_fail(lambda: explain(m, x, aug_smooth=True), contains='take neither')
    fct.test_fail(lambda: explain(m, x, region=(0,0,4,4)), contains='take neither')
    fct.test_fail(lambda: explain(m, x, layer=[6]), contains='[n,c,d,h,w] (d*h*w > 1)')
    fct.test_fail(lambda: explain(m, x[:,:2]), contains='3-channel volumes')
    r = nn.Sequential(nn.Conv2d(3,4,3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4,2)).eval()
    fct.test_fail(lambda: explain(r, x), contains='first convolution is 2-D')
