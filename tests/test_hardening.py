"Hardening (issue 14): per-item callables in Score-CAM, failing `eval()`, NaN activations, items in the data set's own form, float32 maps for float64 and autocast, docments."
import inspect, pytest, torch, numpy as np, pandas as pd
from torch import nn
import torch.nn.functional as F
import torchcam.methods as tcm
from fastcore.docments import docments
from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, ColReader, Resize, Learner, L
from fast_cam.all import *
from fast_cam.capture import capture
from fast_cam.data import shapes_learner, shapes_cnn
from fast_cam.callback import CAMHistory
from conftest import snapshot, assert_same, rel_err

def _cnn(n_out=5):
    "A tiny CNN (16 channels at the explained layer, index path [3]) so that Score-CAM costs a few dozen forwards"
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.ReLU(), nn.Conv2d(8,16,3,stride=2,padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16,n_out)).eval()

def _x(n=3, sz=16):
    torch.manual_seed(1)
    return torch.randn(n,3,sz,sz)

TG = [1,3,0]

def _torchcam_scorecam(m, x, targets, bs):
    ext = tcm.ScoreCAM(m, target_layer=m[3], batch_size=bs, input_shape=tuple(x.shape[1:]))
    try:
        with torch.no_grad(): out = m(x)
        return ext(class_idx=targets, scores=out, normalized=False)[0].detach()
    finally: ext.remove_hooks()

# 1. Score-CAM with a callable that picks a different class per item
@pytest.mark.parametrize('bs', [3, 7, 64])  # 3 = n: rows silently taken as items; 7: a chunk that is not a multiple of n
def test_scorecam_callable_per_item(bs):
    m,x = _cnn(),_x()
    tg = torch.tensor(TG)
    fn = lambda o: o[torch.arange(len(o)), tg]
    ours = explain(m, x, 'scorecam', target=fn, layer=[3], bs=bs, bar=False)
    ref = explain(m, x, 'scorecam', target=TG, layer=[3], bs=bs, bar=False)
    tc = _torchcam_scorecam(m, x, TG, bs)
    assert ours.abs().max()>0 and rel_err(ours, ref) < 1e-5
    assert rel_err(ours, tc) < 1e-5, 'the same per-item targets as torchcam'
    # and the items one at a time
    one = torch.cat([explain(m, x[i:i+1], 'scorecam', target=lambda o,t=t: o[:, t], layer=[3], bs=bs, bar=False) for i,t in enumerate(TG)])
    assert rel_err(ours, one) < 1e-5

def test_scorecam_callable_fast_and_tuple_output():
    "The fast mode scores different channels per item; a tuple output is cut into items too"
    m,x = _cnn(),_x()
    tg = torch.tensor(TG)
    kw = dict(layer=[3], bs=5, bar=False, max_channels=6)
    ours = explain(m, x, 'scorecam', target=lambda o: o[torch.arange(len(o)), tg], **kw)
    assert rel_err(ours, explain(m, x, 'scorecam', target=TG, **kw)) < 1e-5
    class Two(nn.Module):
        def __init__(self, m): super().__init__(); self.m = m
        def forward(self, x): return self.m(x), {'feat': x.mean((1,2,3))}
    t2 = Two(m)
    maps = explain(t2, x, 'scorecam', target=lambda o: o[0][torch.arange(len(o[0])), tg] + 0*o[1]['feat'], layer=m[3], bs=5, bar=False)
    assert rel_err(maps, explain(m, x, 'scorecam', target=TG, layer=[3], bs=5, bar=False)) < 1e-5

# 2. an exception from `model.eval()` leaves the training flags as they were
class NoEval(nn.Module):
    "A module whose `train(False)` fails, after the modules before it were already switched"
    def forward(self, x): return x
    def train(self, mode=True):
        if not mode: raise RuntimeError('this module refuses eval mode')
        return super().train(mode)

@pytest.mark.parametrize('call', ['explain', 'cam_layer', 'ModelState'])
def test_eval_failure_restores_modes(call):
    m = nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.BatchNorm2d(8), nn.ReLU(), NoEval(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8,2)).train()
    m[1].eval()  # a mix of modes: both must come back
    s = snapshot(m)
    with pytest.raises(RuntimeError, match='refuses eval'):
        if call=='explain': explain(m, _x(2), layer=[2])
        elif call=='cam_layer': cam_layer(m, _x(1))
        else:
            with ModelState(m): pass
    assert_same(m, s)
    assert m.training and not m[1].training and m[0].training

# 3. Eigen-CAM on NaN activations
class Sqrt(nn.Module):
    def forward(self, x): return x.sqrt()  # NaN where the conv output is negative

def test_eigencam_nan_activations():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3,8,3,padding=1), Sqrt(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8,2)).eval()
    s = snapshot(m)
    with pytest.raises(CAMError, match='NaN or infinite'): explain(m, _x(2), 'eigencam', layer=[1])
    assert_same(m, s)

# 4. items in the data set's own form
@pytest.fixture(scope='module')
def shapes_learn():
    "The package's `Shapes` learner (items are indices), untrained: only the input pipeline matters here"
    return shapes_learner(n=24, epochs=0, bs=8)

def test_index_items(shapes_learn):
    l = shapes_learn
    ref = l.gradcam(l.dls.test_dl([3,7]).one_batch()[0], target=[0,1])
    assert ref.abs().max()>0
    for x in ([3,7], (3,7), L(3,7), np.array([3,7])):
        assert torch.equal(l.gradcam(x, target=[0,1]), ref)
    assert rel_err(l.gradcam(3, target=0), ref[:1]) < 1e-5
    # the same images given as arrays
    assert rel_err(l.gradcam(list(l.dls.shapes.images[[3,7]]), target=[0,1]), ref) < 1e-6
    # `predict`'s probabilities for the same item
    _,probs = l.gradcam(5, with_preds=True)
    assert torch.allclose(probs[0], l.predict(5)[2], atol=1e-5)

def test_items_errors(shapes_learn, learn):
    with pytest.raises(InputError, match='bare model'): explain(shapes_learn.model, [3,7])
    # a folder learner reads paths: an index is not one of its items
    with pytest.raises(InputError, match='test_dl.*int items'): learn.gradcam([3,7])
    with pytest.raises(InputError, match='test_dl.*dict items'): learn.gradcam([{'a':1}])

@pytest.fixture(scope='module')
def df_learn(shapes):
    "A DataBlock over DataFrame rows: `get_x` reads a column"
    fs = sorted(shapes.glob('*/*.png'))
    df = pd.DataFrame({'fname': [f'{f.parent.name}/{f.name}' for f in fs], 'label': [f.parent.name for f in fs]})
    db = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ColReader('fname', pref=f'{shapes}/'), get_y=ColReader('label'), item_tfms=Resize(32))
    torch.manual_seed(0)
    return Learner(db.dataloaders(df, bs=4, num_workers=0), shapes_cnn(2, nf=8)), df

def test_dataframe_rows(df_learn, shapes):
    l,df = df_learn
    ref = l.gradcam([shapes/df.fname[0], shapes/df.fname[9]], target=[0,1])
    assert ref.abs().max()>0
    assert torch.equal(l.gradcam([df.iloc[0], df.iloc[9]], target=[0,1]), ref)
    assert torch.equal(l.gradcam(df.iloc[[0,9]], target=[0,1]), ref)
    with pytest.raises(InputError, match='empty'): l.gradcam(df.iloc[:0])

# 5. float64 models give float32 maps
METHODS = ['cam','gradcam','gradcampp','xgradcam','layercam','hirescam','eigencam','scorecam','guided_backprop','guided_gradcam']

@pytest.mark.parametrize('method', METHODS)
def test_float64_model_float32_maps(method):
    m,x = _cnn(),_x(2)
    kw = dict(bar=False) if method=='scorecam' else {}
    f32 = explain(m, x, method, target=[1,3], **kw)
    f64 = explain(m.double(), x.double(), method, target=[1,3], **kw)
    assert f64.dtype==torch.float32 and f64.abs().max()>0
    assert rel_err(f64, f32) < 1e-4
    if method=='cam': assert explain(m, x.double(), 'cam', target='all').dtype==torch.float32

# 6. autocast: the weighting and the sum in float32
@pytest.mark.parametrize('method', ['gradcam','gradcampp','layercam','eigencam'])
def test_autocast_float32_maps(method):
    m,x = _cnn(),_x(2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        maps = explain(m, x, method, target=[1,3], layer=[3])
        c = capture(m, x, [m[3]], target=[1,3], grad=get_method(method).needs_grad)
    assert c.acts[0].dtype==torch.float32, 'the bf16 activations, converted'
    ref = get_method(method).combine(c.acts[0], None if c.grads is None else c.grads[0])  # outside autocast
    assert maps.dtype==torch.float32 and maps.abs().max()>0
    assert rel_err(maps, ref) < 1e-6

def test_autocast_guided_gradcam():
    m,x = _cnn(),_x(2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        maps = explain(m, x, 'guided_gradcam', target=[1,3], layer=[3])
        c = capture(m, x, [m[3]], target=[1,3], guided=True)
    ref = c.xgrad * upsample(GradCAM().combine(c.acts[0], c.grads[0]), x.shape[-2:])[:,None]
    assert maps.dtype==torch.float32 and maps.abs().max()>0 and rel_err(maps, ref) < 1e-6

@pytest.mark.parametrize('method', ['cam','scorecam','guided_backprop','guided_gradcam'])
def test_autocast_other_methods(method):
    m,x = _cnn(),_x(2)
    kw = dict(bar=False, max_channels=4) if method=='scorecam' else {}
    with torch.autocast('cpu', dtype=torch.bfloat16): maps = explain(m, x, method, target=[1,3], **kw)
    ref = explain(m, x, method, target=[1,3], **kw)
    assert maps.dtype==torch.float32 and maps.shape==ref.shape
    # close to the float32 model's maps: only the bf16 forward differs (guided gradients flip at a few ReLUs, so compare directions)
    assert F.cosine_similarity(maps.flatten(), ref.flatten(), 0) > 0.95

# 8. docments
@pytest.mark.parametrize('f', [capture, CAMHistory.show])
def test_docments(f):
    d = docments(f, args_kwargs=True)
    assert all(d[k] for k in inspect.signature(f).parameters if k!='self'), d

def test_show_signatures_delegate():
    "The rendering options of `show_heatmap` show in every `show_*` signature, as fastai's `@delegates` does"
    import inspect
    from fastai.vision.all import Learner
    for n in ('show_cam','show_gradcam','show_guided_backprop','show_guided_gradcam'):
        ps = inspect.signature(getattr(Learner, n)).parameters
        assert {'alpha','cmap','figsize','ax','ncols'} <= set(ps), n

def test_no_private_imports_across_modules():
    "No module imports another module's private helper"
    import re, fast_cam
    from pathlib import Path
    for f in Path(fast_cam.__file__).parent.glob('*.py'):
        for l in f.read_text().splitlines():
            if re.match(r'from \.\w+ import', l): assert not re.search(r'\b_\w+', l.split('import',1)[1]), f'{f.name}: {l}'
