"`find_shortcuts`: a planted shortcut is found, with its class and corner; a clean model has none; bad input; state."
import pytest, torch
from fastai.vision.all import Learner
from fast_cam.all import *
from conftest import snapshot, assert_same

@pytest.fixture(scope='module')
def planted():
    "The small CNN trained on 600 shapes whose training crosses all carry a mark in the top-left corner (cached)"
    return shapes_learner(600, epochs=4, mark='cross', cache=True)

def _acc(learn, mark_valid):
    sh = Shapes(600, seed=0, mark='cross', mark_valid=mark_valid)
    p,t = learn.get_preds(dl=sh.dls().valid)
    return float((p.argmax(1)==t).float().mean())

def test_model_uses_the_mark(planted):
    # with the mark where training had it, far better than without it: the model measurably uses it
    with planted.no_bar(): same,none = _acc(planted, 'same'),_acc(planted, 'none')
    assert same-none > .1, (same, none)

def test_planted_is_found(planted):
    with planted.no_bar(): s = find_shortcuts(planted)
    hit = [f for f in s.findings if f.cls=='cross' and f.region=='top-left corner']
    assert {f.kind for f in hit} >= {'same_place'}, s
    f = hit[0]
    assert f.score >= f.threshold and 0 < f.threshold <= 1 and 'top-left corner' in f.evidence
    sh = planted.dls.shapes
    # its examples are items predicted 'cross', most of them carrying the mark, whatever their class
    items = [planted.dls.valid.items[i] for i in f.items]
    assert sh.marked[items].mean() > .5 and len(set(sh.labels[items])) > 1
    assert f.mean_map.shape == (32, 32) and f.mean_map[:8,:8].mean() > f.mean_map[8:,8:].mean()
    assert list(s.stats.cls) == list(planted.dls.vocab) and 'same_place_share' in s.stats
    assert 'cross' in repr(s) and 'top-left corner' in repr(s)

def test_clean_is_not_flagged(slearn):
    with slearn.no_bar(): s = find_shortcuts(slearn)
    assert s.findings == [], s
    assert 'nothing flagged' in repr(s)

def test_cams_reused(planted):
    dl = planted.dls.valid
    with planted.no_bar():
        cams = planted.get_cams(dl)
        a,b = find_shortcuts(planted, cams=cams),find_shortcuts(planted, dl=dl)
    assert [(f.cls, f.kind, f.region, f.score) for f in a] == [(f.cls, f.kind, f.region, f.score) for f in b]

def test_state_untouched(planted):
    m = planted.model; m.train(); s0 = snapshot(m)
    with planted.no_bar(): find_shortcuts(planted, occlude=True)
    assert_same(m, s0)
    # failing part-way (a layer that does not exist, found in the first batch's forward) leaves it as it was too
    with pytest.raises(LayerError), planted.no_bar(): find_shortcuts(planted, layer='nope')
    assert_same(m, s0)
    m.eval()

def test_bad_input(planted):
    cams = (torch.rand(5, 8, 8), torch.rand(5, 4), None)
    with pytest.raises(CAMTypeError, match='Learner'): find_shortcuts(planted.model)
    with pytest.raises(CAMError, match='maps, preds, targs'): find_shortcuts(planted, cams=cams)
    with pytest.raises(CAMError, match='maps, preds, targs'): find_shortcuts(planted, cams=torch.rand(5, 8, 8))
    with pytest.raises(CAMError, match='alpha'): find_shortcuts(planted, alpha=2)
    with pytest.raises(CAMError, match='min_share'): find_shortcuts(planted, min_share=-.1)
    with pytest.raises(CAMError, match='`p`'): find_shortcuts(planted, p=0)
    with pytest.raises(CAMError, match='masks'): find_shortcuts(planted, masks=torch.zeros(3, 64, 64, dtype=bool))
    with pytest.raises(CAMError, match='single-label'):
        find_shortcuts(planted, cams=(torch.rand(120, 8, 8), torch.rand(120, 4, 2, 2), None))
    with pytest.raises(CAMError, match='mark'): Shapes(20, mark='hexagon')
