"`fast_cam.metrics`: similarity, localisation and faithfulness measures: hand-computed cases, cross-checks against scipy, scikit-image, torchvision and pytorch-grad-cam, batch = items."
import numpy as np, pytest, torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from fast_cam.all import *

# --- similarity measures against scipy and scikit-image

def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = F.relu(torch.randn(5, 16, 16, generator=g))            # many tied zeros
    b = (torch.rand(5, 16, 16, generator=g)*4).round()          # few distinct values
    b[2] = a[2]*3+1
    r = spearman(a, b)
    ref = torch.tensor([spearmanr(a[i].flatten(), b[i].flatten())[0] for i in range(5)], dtype=torch.float32)
    torch.testing.assert_close(r, ref, atol=1e-6, rtol=0)
    assert r[2]==pytest.approx(1.)
    assert spearman(a, torch.zeros_like(a)).isnan().all()      # scipy gives NaN for a constant input too

@pytest.mark.parametrize('gaussian', [True, False])
def test_ssim_matches_skimage(gaussian):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 40, 33, generator=g)
    b = (a + .3*torch.rand(3, 40, 33, generator=g)).clamp(0, 1)
    b[1] = torch.rand(40, 33, generator=g)
    r = ssim(a, b, gaussian=gaussian)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False) if gaussian else {}
    ref = [structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1., **kw) for i in range(3)]
    torch.testing.assert_close(r, torch.tensor(ref, dtype=torch.float32), atol=1e-6, rtol=0)
    assert ssim(a, a, gaussian=gaussian).sub(1).abs().max() < 1e-6

def test_ssim_window_too_big():
    with pytest.raises(InputError, match='upsample'): ssim(torch.rand(1,8,8), torch.rand(1,8,8))

# --- localisation

def test_energy_pointing_game_hand_case():
    mp = torch.tensor([[[.6,.2],[.1,.1]]])
    top = torch.tensor([[[1,1],[0,0]]]).bool()
    assert energy_pointing_game(mp, top).item() == pytest.approx(.8)
    assert energy_pointing_game(mp, 1-top.int()).item() == pytest.approx(.2)
    # upsampled to the mask's size: a uniform map gives the mask's share whatever the sizes
    assert energy_pointing_game(torch.ones(1,2,2), boxes_to_masks([[0,0,8,4]], 16)).item() == pytest.approx(32/256)
    assert energy_pointing_game(-torch.ones(1,2,2), top).isnan().all()  # no positive mass: undefined

def test_pointing_game_tolerance_and_ties():
    mk = boxes_to_masks([[10,10,20,20]], 32)
    mp = torch.zeros(1,32,32); mp[0,10,23] = 1.                 # 4 px right of the box
    assert pointing_game(mp, mk).item()==0
    assert pointing_game(mp, mk, tol=3.9).item()==0
    assert pointing_game(mp, mk, tol=4).item()==1
    mp[0,15,15] = 1.                                            # two tied peaks, one inside
    assert pointing_game(mp, mk).item()==pytest.approx(.5)
    assert pointing_game(torch.ones(1,4,4), mk).item()==pytest.approx(100/1024)

def test_pointing_game_upsamples_the_map():
    mp = torch.tensor([[[0.,0],[0,1]]])                          # peak in the bottom-right quarter
    mk = boxes_to_masks([[32,32,64,64]], 64)
    assert pointing_game(mp, mk).item()==1 and pointing_game(mp, ~mk).item()==0

def test_maps_and_masks_must_match():
    with pytest.raises(TruthError, match='2 masks for 3 maps'): pointing_game(torch.rand(3,4,4), torch.ones(2,4,4))
    with pytest.raises(TruthError, match=r'\[n,4\]'): boxes_to_masks(torch.ones(3,5), 8)

@pytest.mark.parametrize('conn', [4, 8])
def test_largest_component_matches_scipy(conn):
    g = torch.Generator().manual_seed(conn)
    m = torch.rand(40, 24, 24, generator=g) < .55
    r = largest_component(m, conn)
    st = ndimage.generate_binary_structure(2, 1 if conn==4 else 2)
    for i in range(len(m)):
        lab,_ = ndimage.label(m[i].numpy(), st)
        sizes = np.bincount(lab.ravel()); sizes[0] = 0
        ls = np.unique(lab[r[i].numpy()])
        assert len(ls)==1 and ls[0]>0 and sizes[ls[0]]==sizes.max() and (lab==ls[0]).sum()==r[i].sum()

def test_cam_box_and_iou():
    mp = torch.zeros(2,8,8)
    mp[0,1:4,2:6] = 1.; mp[0,6,6] = .9                          # a 3×4 block and a lone, smaller peak
    mp[1] = 0.1; mp[1,5,5] = 1.                                   # everything under 20 %: only the peak stays
    test = cam_to_box(mp)
    assert test.tolist()==[[2,1,6,4],[5,5,6,6]]
    assert (cam_to_box(mp, size=16) - 2*test).abs().max() <= 1     # boxes at the upsampled size
    assert cam_to_box(torch.zeros(1,8,8)).tolist()==[[0,0,0,0]]    # an empty map has no box

def test_box_iou_matches_torchvision():
    from torchvision.ops import box_iou as tv_iou
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 30, (20,2), generator=g); wh = torch.randint(1, 30, (20,2), generator=g)
    a = torch.cat([xy, xy+wh], 1)
    b = a.roll(1, 0) + torch.randint(-3, 4, (20,4), generator=g).clamp(0)
    b[:,2:] = torch.maximum(b[:,2:], b[:,:2]+1)
    torch.testing.assert_close(box_iou(a, b), tv_iou(a.float(), b.float()).diagonal(), atol=1e-6, rtol=0)

# --- faithfulness

def test_auc_linear_curve():
    assert auc(torch.linspace(1, 0, 65)).item()==pytest.approx(.5)
    assert auc(torch.linspace(.2, .6, 9)).item()==pytest.approx(.4)
    with pytest.raises(CAMError): auc(torch.ones(1))

def _naive_deletion(m, x, mp, c, steps):
    "One pixel order, one image at a time, written out plainly"
    H,W = x.shape[-2:]
    up = F.interpolate(mp[None,None], size=(H,W), mode='bilinear', align_corners=False).flatten()
    order = sorted(range(H*W), key=lambda j: (-up[j].item(), j))
    res = []
    for k in range(steps+1):
        xx = x.clone().view(3, -1)
        xx[:, order[:round(k*H*W/steps)]] = 0
        with torch.no_grad(): res.append(m(xx.view(1,3,H,W)).softmax(1)[0,c].item())
    return torch.tensor(res)

def test_deletion_matches_a_naive_loop(slearn, sbatch):
    xb,maps,_,_ = sbatch
    m = slearn.model.eval()
    a,c = deletion(slearn, xb[:2], maps[:2], steps=8)
    with torch.no_grad(): pred = m(xb[:2]).argmax(1)
    for i in range(2):
        ref = _naive_deletion(m, xb[i], maps[i], pred[i], 8)
        torch.testing.assert_close(c[i], ref, atol=1e-5, rtol=0)
        trapz = getattr(np, 'trapezoid', None) or np.trapz
        assert a[i].item()==pytest.approx(trapz(ref.numpy(), dx=1/8), abs=1e-5)

@pytest.mark.parametrize('mode', ['deletion', 'insertion'])
def test_perturbation_batch_is_items(slearn, sbatch, mode):
    xb,maps,_,_ = sbatch
    a,c = perturbation_curve(slearn, xb, maps, mode, steps=8, bs=64)
    a7,c7 = perturbation_curve(slearn, xb, maps, mode, steps=8, bs=7)          # batches that cut across items
    one = [perturbation_curve(slearn, xb[i:i+1], maps[i:i+1], mode, steps=8) for i in range(len(xb))]
    torch.testing.assert_close(c7, c, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([o[1] for o in one]), c, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([o[0] for o in one]), a, atol=1e-5, rtol=0)
    assert c.shape==(6, 9)
    # the ends of the curves: the image itself, and the substrate all over
    with torch.no_grad():
        p = slearn.model.eval()(xb).softmax(1)
        c_ = p.argmax(1)
        end = slearn.model(torch.zeros_like(xb) if mode=='deletion' else gaussian_blur(xb)).softmax(1).gather(1, c_[:,None])[:,0]
    full = p.gather(1, c_[:,None])[:,0]
    torch.testing.assert_close(c[:, 0 if mode=='deletion' else -1], full, atol=1e-5, rtol=0)
    torch.testing.assert_close(c[:, -1 if mode=='deletion' else 0], end, atol=1e-5, rtol=0)

def test_perturbation_targets_and_logits(slearn, sbatch):
    xb,maps,_,_ = sbatch
    _,cl = deletion(slearn, xb[:2], maps[:2], target=[1, 'square'], steps=2, score='logit')
    with torch.no_grad(): o = slearn.model.eval()(xb[:2])
    torch.testing.assert_close(cl[:,0], o[[0,1],[1,2]], atol=1e-5, rtol=0)
    with pytest.raises(InputError, match='3 maps for 2 images'): deletion(slearn, xb[:2], maps[:3])
    with pytest.raises(CAMError, match='mode'): perturbation_curve(slearn, xb, maps, 'remove')

def test_drop_increase_matches_pytorch_grad_cam(slearn, sbatch):
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    xb,maps,_,_ = sbatch
    m = slearn.model.eval()
    d,inc = drop_increase(slearn, xb, maps)
    with torch.no_grad(): out = m(xb)
    Y = out.softmax(1).max(1).values
    # pytorch-grad-cam multiplies the normalised input by the map as given and reports the absolute drop Y-O
    cams = min_max_scale(upsample(maps, 64)).numpy()
    tg = [ClassifierOutputSoftmaxTarget(int(c)) for c in out.argmax(1)]
    ref_d = DropInConfidence()(xb, cams, tg, m)
    ref_i = IncreaseInConfidence()(xb, cams, tg, m)
    torch.testing.assert_close(d*Y/100, torch.tensor(ref_d, dtype=torch.float32).flatten(), atol=1e-5, rtol=0)
    assert inc.tolist()==[bool(v) for v in np.ravel(ref_i)]

def test_drop_increase_batch_is_items(slearn, sbatch):
    xb,maps,_,_ = sbatch
    d,inc = drop_increase(slearn, xb, maps)
    one = [drop_increase(slearn, xb[i:i+1], maps[i:i+1]) for i in range(len(xb))]
    torch.testing.assert_close(torch.cat([o[0] for o in one]), d, atol=1e-4, rtol=0)

def test_faithfulness_metric_errors_and_seeds():
    # bad options name what was wrong; the same seed gives the same ROAD and infidelity scores
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3*8*8, 2))
    xb,mp = torch.randn(2,3,8,8),torch.rand(2,4,4)
    with pytest.raises(CAMError, match='order'): perturbation_confidence(m, xb, mp, order='top')
    with pytest.raises(CAMError, match='score'): confidence_change(m, xb, mp, score='acc')
    with pytest.raises(CAMError, match='percentage'): remove_top(m, xb, mp, p=-5)
    with pytest.raises(InputError, match='maps'): keep_top(m, xb, mp[:1])
    assert torch.equal(road(m, xb, mp, percentiles=(50,))[0], road(m, xb, mp, percentiles=(50,))[0])
    assert torch.equal(infidelity(m, xb, mp, seed=3), infidelity(m, xb, mp, seed=3))
    assert not torch.equal(infidelity(m, xb, mp, seed=3), infidelity(m, xb, mp, seed=4))
