"Promise 1: after any call, successful or failing part-way, the model and torch are exactly as before."
import pytest, torch
from torch import nn
from fastai.vision.all import Learner, vision_learner, resnet18
from fast_cam.all import *
from conftest import snapshot, assert_same, hooks_of

def _dirty(learn):
    "A model as a user may hold it mid-training: train mode, some .grad filled, the body frozen"
    m = learn.model.train()
    xb,yb = learn.dls.one_batch()
    learn.loss_func(m(xb), yb).backward()
    learn.freeze()
    m[1][-1].weight.grad = None  # one trainable parameter with no .grad
    return m

CALLS = {
    'gradcam':         lambda l,x,**kw: l.gradcam(x, **kw),
    'guided_backprop': lambda l,x,**kw: l.guided_backprop(x, **kw),
    'guided_gradcam':  lambda l,x,**kw: l.guided_gradcam(x, **kw),
    'heatmap':         lambda l,x,**kw: l.heatmap(x, method='gradcam', with_preds=True, **kw),
    'explain':         lambda l,x,**kw: explain(l.model, to_batch(l, x), 'gradcam', **kw),
}

@pytest.mark.parametrize('call', list(CALLS))
@pytest.mark.parametrize('grad_mode', ['enabled', 'no_grad', 'inference_mode'])
def test_success_leaves_state(learn, files, call, grad_mode):
    m = _dirty(learn); s = snapshot(m)
    ctx = {'enabled':torch.enable_grad, 'no_grad':torch.no_grad, 'inference_mode':torch.inference_mode}[grad_mode]
    with ctx():
        s = snapshot(m)
        out = CALLS[call](learn, files)
        assert_same(m, s)
    o = out[0] if isinstance(out, tuple) else out
    assert o.dtype==torch.float32 and torch.isfinite(o).all() and o.abs().max()>0

def test_cam_success_leaves_state(cam_learn, files):
    m = _dirty(cam_learn); s = snapshot(m)
    cam_learn.cam(files); cam_learn.cam(files, target='all')
    assert_same(m, s)

def test_helpers_leave_state(learn, files, capsys):
    m = _dirty(learn); s = snapshot(m)
    cam_layer(learn); arch_summary(learn, verbose=True); get_module(learn, [0,-1]); to_batch(learn, files)
    assert_same(m, s)

def _boom(o): raise RuntimeError('boom in the target')

@pytest.mark.parametrize('call', ['gradcam', 'guided_backprop', 'guided_gradcam', 'heatmap'])
def test_failing_target_leaves_state(learn, files, call):
    "The target callable runs after the forward, with the graph built and the hooks on"
    m = _dirty(learn); s = snapshot(m)
    with pytest.raises(RuntimeError, match='boom'): CALLS[call](learn, files, target=_boom)
    assert_same(m, s)

@pytest.mark.parametrize('call', ['gradcam', 'guided_backprop', 'guided_gradcam'])
def test_failing_forward_leaves_state(learn, files, call):
    "A module of the head raises during the forward, after fast_cam's hooks have switched autograd on"
    m = _dirty(learn); s = snapshot(m)
    def bad(mod, i, o): raise RuntimeError('boom in the forward')
    h = m[1][-1].register_forward_hook(bad)
    try:
        with pytest.raises(RuntimeError, match='boom'): CALLS[call](learn, files)
    finally: h.remove()
    assert_same(m, s)

@pytest.mark.parametrize('call', ['gradcam', 'guided_gradcam', 'guided_backprop'])
def test_failing_backward_leaves_state(learn, files, call, monkeypatch):
    m = _dirty(learn); s = snapshot(m)
    def bad(*a, **k): raise RuntimeError('boom in autograd')
    monkeypatch.setattr(torch.autograd, 'grad', bad)
    with pytest.raises(RuntimeError, match='boom'): CALLS[call](learn, files)
    monkeypatch.undo()
    assert_same(m, s)

def test_failing_cam_leaves_state(learn, files):
    "CAM on fastai's default head fails after the capture"
    m = _dirty(learn); s = snapshot(m)
    with pytest.raises(HeadError): learn.cam(files)
    assert_same(m, s)

def test_user_tensor_untouched(learn, files):
    xb = to_batch(learn, files); x0 = xb.clone()
    learn.guided_gradcam(xb); learn.gradcam(xb)
    assert torch.equal(xb, x0) and not xb.requires_grad and xb.grad is None

def test_no_hooks_after_many_calls(learn, files):
    "Hooks never pile up (the peers' memory-growth reports)"
    for _ in range(5): learn.gradcam(files); learn.guided_gradcam(files)
    assert hooks_of(learn.model)==[]

def test_no_backward_hook_warnings(learn, files):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        learn.gradcam(files); learn.guided_backprop(files)

@pytest.mark.parametrize('method', ['cam', 'gradcam', 'gradcampp', 'layercam', 'eigencam', 'scorecam', 'guided_backprop', 'guided_gradcam'])
def test_results_hold_no_graph(cam_learn, files, method):
    "Maps and predictions are plain tensors: no autograd graph (and the activations it holds) is kept alive by a result"
    maps,preds = cam_learn.heatmap(files, method=method, with_preds=True, **({'max_channels': 4} if method=='scorecam' else {}))
    for t in (maps, preds): assert not t.requires_grad and t.grad_fn is None

def test_no_memory_growth(learn, files):
    "Repeated calls leave no tensors behind (the peers' memory-growth reports): the number of live tensors stays put"
    import gc
    def live():
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor or isinstance(o, torch.nn.Parameter))
    learn.gradcam(files); learn.guided_gradcam(files)
    n0 = live()
    for _ in range(5): learn.gradcam(files); learn.guided_gradcam(files); learn.heatmap(files, method='layercam')
    assert live() <= n0
