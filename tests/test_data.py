"`fast_cam.data`: the synthetic `Shapes` set (deterministic, masks and boxes where the shapes are) and the demo model trained on it."
import pytest, torch, numpy as np
from fast_cam.all import *

@pytest.fixture(scope='module')
def trained():
    "The demo's model trained here from scratch (3,000 shapes, 7 epochs; about 40 s on two cores), not read from the cache"
    return shapes_learner()

def test_shapes_deterministic_and_consistent():
    a,b,c = Shapes(60, seed=3),Shapes(60, seed=3),Shapes(60, seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks) and not np.array_equal(a.images, c.images)
    assert a.images.shape==(60,64,64,3) and a.masks.dtype==bool and set(a.labels)<=set(range(len(a.vocab)))
    for m,(x0,y0,x1,y1) in zip(a.masks, a.boxes):
        assert m.sum()>30 and m[y0:y1, x0:x1].sum()==m.sum()
        assert m[y0:y1, x0:x1].any(0).all() and m[y0:y1, x0:x1].any(1).all(), 'the box is tight'
    # the object is drawn where its mask is: its pixels differ from the background just outside
    i = 0; m = a.masks[i]
    assert np.abs(a.images[i][m].mean(0) - a.images[i][~m].mean(0)).max() > 20

def test_shapes_dls_items_index_masks():
    ds = Shapes(100)
    dls = ds.dls(bs=16)
    assert list(dls.vocab)==ds.vocab and dls.shapes is ds
    i = dls.valid.items[0]
    x,y = dls.valid_ds[0]
    assert np.array_equal(np.asarray(x), ds.images[i]) and dls.vocab[y]==ds.vocab[ds.labels[i]]

def test_trained_accuracy(trained):
    "A small model trained from scratch reaches >= 95 % validation accuracy"
    with trained.no_bar(): acc = trained.validate()[1]
    print(f'validation accuracy {acc:.4f}')
    assert acc >= 0.95

def test_gradcam_points_at_the_shape(trained):
    "Grad-CAM's mass sits on the object: far more of it inside the mask than the mask's share of the image"
    ds,items = trained.dls.shapes,trained.dls.valid.items[:100]
    maps = upsample(trained.gradcam(list(ds.images[items])), 64)
    m = torch.from_numpy(ds.masks[items])
    energy = (maps*m).sum((1,2))/maps.sum((1,2)).clamp_min(1e-12)
    assert energy.mean() > 3*m.float().mean()
