"Faithfulness metrics against pytorch-grad-cam (ROAD, threshold perturbation, confidence change) and captum (infidelity, sensitivity)"
import pytest, torch, torchvision, numpy as np
from conftest import rel_err
from fast_cam.metrics import *
from fast_cam.core import min_max_scale
from fast_cam.learner import explain
pgc_road = pytest.importorskip('pytorch_grad_cam.metrics.road')
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined, ROADMostRelevantFirst
from pytorch_grad_cam.metrics.perturbation_confidence import (PerturbationConfidenceMetric, RemoveMostRelevantFirst,
                                                              RemoveLeastRelevantFirst)
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange, DropInConfidence
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from captum.metrics import infidelity as c_infidelity, sensitivity_max as c_sensitivity

ARCHS = [('resnet18','layer4'), ('efficientnet_b0','features.8'), ('mobilenet_v3_small','features.12')]

@pytest.fixture(scope='module', params=ARCHS, ids=[a for a,_ in ARCHS])
def case(request):
    name,layer = request.param
    torch.manual_seed(0)
    m = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    xb = torch.randn(2,3,64,64)
    maps = min_max_scale(saliency_at(explain(m, xb, 'gradcam', layer=layer), (64,64)))
    idx = m(xb).argmax(1)
    return m, layer, xb, maps, idx, [ClassifierOutputSoftmaxTarget(int(i)) for i in idx]

def diff_err(a, b, m, xb, idx):
    "max |a-b| relative to the target's probability: score changes of a random net are tiny differences"
    p = m(xb).softmax(1).gather(1, idx[:,None])[:,0]
    return (torch.as_tensor(np.asarray(a)) - torch.as_tensor(np.asarray(b))).abs().max().item()/p.abs().max().item()

def zero_fill(img, mask): return torch.where(mask.bool()[None], img, 0.)

def test_impute_matches_pgc():
    # pytorch-grad-cam's sparse solve with the noise off, on several images, masks and shares removed
    torch.manual_seed(1)
    xb = torch.randn(2,3,32,32)
    smooth = torch.nn.functional.interpolate(torch.rand(2,1,4,4), size=(32,32), mode='bilinear')[:,0]
    for mp in (torch.rand(2,32,32), smooth):
        for p in (10,50,90):
            keep = ~removal_mask(mp, p)
            ref = torch.stack([NoisyLinearImputer(noise=0)(xb[i], keep[i].float()) for i in range(2)])
            for solver in ('direct', 'cg'): assert rel_err(road_impute(xb, keep, noise=0, solver=solver), ref) < 1e-5

def test_masks_match_pgc():
    # our share removed p is pgc's percentile 100-p; its Otsu option ('auto') keeps the pixels above the threshold
    torch.manual_seed(2)
    mp = min_max_scale(torch.nn.functional.interpolate(torch.rand(4,1,5,5), size=(64,64), mode='bilinear')[:,0])
    def keep_of(rule): return torch.stack([torch.as_tensor(rule(None, c)) for c in mp]) > .5
    for p in (10,30,50,70,90):
        assert torch.equal(removal_mask(mp, p), ~keep_of(RemoveMostRelevantFirst(100-p, lambda i,k: k)))
        assert torch.equal(removal_mask(mp, p, 'lerf'), ~keep_of(RemoveLeastRelevantFirst(100-p, lambda i,k: k)))
    # departure: pgc's "remove most relevant first" with Otsu removes the least relevant pixels
    assert torch.equal(removal_mask(mp, 'otsu', 'lerf'), ~keep_of(RemoveMostRelevantFirst('auto', lambda i,k: k)))
    import cv2
    ref = [cv2.threshold(np.uint8(c.numpy()*255), 0, 255, cv2.THRESH_BINARY+cv2.THRESH_OTSU)[0] for c in mp]
    assert otsu_threshold(mp).tolist() == ref

def test_road(case, monkeypatch):
    m,_,xb,maps,idx,tg = case
    monkeypatch.setattr(NoisyLinearImputer.__init__, '__defaults__', (0., pgc_road.neighbors_weights))  # noise off
    comb,morf,lerf = road(m, xb, maps, percentiles=(20,80), noise=0)
    assert diff_err(comb, ROADCombined(percentiles=[20,80])(xb, maps.numpy(), tg, m), m, xb, idx) < 1e-5
    assert diff_err(morf[:,0], ROADMostRelevantFirst(80)(xb, maps.numpy(), tg, m), m, xb, idx) < 1e-5

def test_threshold_and_confidence(case):
    m,_,xb,maps,idx,tg = case
    cams = maps.numpy()
    for fill,imp in ((0., zero_fill), ('road', NoisyLinearImputer(noise=0))):
        ref = PerturbationConfidenceMetric(RemoveMostRelevantFirst(70, imp))(xb, cams, tg, m)
        assert diff_err(remove_top(m, xb, maps, p=30, fill=fill, noise=0), ref, m, xb, idx) < 1e-5
        ref = PerturbationConfidenceMetric(RemoveLeastRelevantFirst(30, imp))(xb, cams, tg, m)
        assert diff_err(keep_top(m, xb, maps, p=30, fill=fill, noise=0), ref, m, xb, idx) < 1e-5
    ref = PerturbationConfidenceMetric(RemoveMostRelevantFirst('auto', zero_fill))(xb, cams, tg, m)
    assert diff_err(perturbation_confidence(m, xb, maps, p='otsu', order='lerf', fill=0.), ref, m, xb, idx) < 1e-5
    ch = confidence_change(m, xb, maps)
    assert diff_err(ch, CamMultImageConfidenceChange()(xb, cams, tg, m), m, xb, idx) < 1e-5
    assert diff_err((-ch).clamp_min(0), DropInConfidence()(xb, cams, tg, m), m, xb, idx) < 1e-5

def test_infidelity_sensitivity(case):
    # captum with the same perturbations: our seeded draws, item by item
    m,layer,xb,maps,idx,_ = case
    k,sig = 4,.1
    I = sig*torch.randn((2*k,3,64,64), generator=torch.Generator().manual_seed(0))
    attr = maps[:,None].expand(2,3,64,64).contiguous()
    for norm in (True, False):
        ref = c_infidelity(m, lambda inp: (I, inp-I), xb, attr, target=idx, n_perturb_samples=k, normalize=norm)
        assert rel_err(infidelity(m, xb, maps, n_perturb=k, sigma=sig, normalize=norm), ref) < 1e-5
    eps = .02*(2*torch.rand((2*k,3,64,64), generator=torch.Generator().manual_seed(0))-1)
    # captum's explanation function takes and returns tuples
    def fn(x_, target): return (explain(m, x_[0] if isinstance(x_, tuple) else x_, 'gradcam', target=target, layer=layer),)
    ref = c_sensitivity(fn, xb, perturb_func=lambda inp: inp+eps, n_perturb_samples=k, target=idx)
    assert rel_err(sensitivity_max(m, xb, 'gradcam', n_perturb=k, layer=layer), ref) < 1e-5
