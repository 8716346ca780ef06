"The Learner API (`explain`, `learn.heatmap` and its shortcuts): predictions, batch = items (promise 2), half precision, frozen models, `aug_smooth`."
import copy, pytest, torch
import torch.nn.functional as F
from torchvision.models import resnet18 as tv_resnet18
from fast_cam.all import *
from conftest import rel_err

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
