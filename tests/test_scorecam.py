"`fast_cam.scorecam`: Score-CAM against torchcam, its fast mode's options, and callable targets that pick a different class per item."
import pytest, torch
from torch import nn
import torchcam.methods as tcm
from fast_cam.all import *
from conftest import rel_err, small_cnn, small_x, PEER_ARCHS, PEER_TARGETS, tv_model, tv_x, torchcam_raw, nonzero

@pytest.mark.parametrize('arch', list(PEER_ARCHS))
def test_scorecam_vs_torchcam(arch):
    # densenet121: the first layer of the last dense block (512 channels, post-ReLU) rather than the last (992): half the masked forwards
    # float32: Score-CAM's softmax of scores is well conditioned, and the hundreds of masked forwards cost half as much as in float64
    m,x,name = tv_model(arch, torch.float32),tv_x(64, torch.float32),PEER_ARCHS[arch] if arch!='densenet121' else 'features.denseblock4.denselayer1.relu1'
    ours = explain(m, x, 'scorecam', target=PEER_TARGETS, layer=name, bs=64)
    tc = torchcam_raw(tcm.ScoreCAM, m, name, x, batch_size=64)
    nonzero(ours)
    e = rel_err(min_max_scale(ours), min_max_scale(tc))
    print(f'{arch} scorecam: rel err vs torchcam (min-max scaled) {e:.2e}')
    assert e<=1e-4

def test_scorecam_options(learn, files):
    ex = learn.heatmap(files, method='scorecam', target=1)
    for sel in ('taylor','variance','gradcam'):
        for fill in ('gp','min','mean','zero'):
            fm = learn.heatmap(files, method='scorecam', target=1, max_channels=16, select=sel, fill=fill)
            assert fm.shape==ex.shape and torch.isfinite(fm).all()
    assert torch.allclose(learn.heatmap(files, method='scorecam', target=1, max_channels=512), ex, atol=1e-6)
    with pytest.raises(CAMError, match='select'): learn.heatmap(files, method='scorecam', max_channels=4, select='random')
    with pytest.raises(CAMError, match='fill'): learn.heatmap(files, method='scorecam', max_channels=4, fill='median')
    with pytest.raises(CAMError, match='rounds'): learn.heatmap(files, method='scorecam', max_channels=4, rounds=0)

TG = [1,3,0]

def _torchcam_scorecam(m, x, targets, bs):
    ext = tcm.ScoreCAM(m, target_layer=m[3], batch_size=bs, input_shape=tuple(x.shape[1:]))
    try:
        with torch.no_grad(): out = m(x)
        return ext(class_idx=targets, scores=out, normalized=False)[0].detach()
    finally: ext.remove_hooks()

# a callable that picks a different class per item
@pytest.mark.parametrize('bs', [3, 7, 64])  # 3 = n: rows silently taken as items; 7: a chunk that is not a multiple of n
def test_scorecam_callable_per_item(bs):
    m,x = small_cnn(),small_x()
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
    m,x = small_cnn(),small_x()
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
