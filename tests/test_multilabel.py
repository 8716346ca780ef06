"Multi-label learners (MultiCategoryBlock + BCEWithLogitsLossFlat), target='all' for the gradient methods, and target resolution in one place"
import inspect, re, warnings, pytest, torch, numpy as np, pandas as pd
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from PIL import Image, ImageDraw
from fastai.vision.all import ImageDataLoaders, Resize, vision_learner, resnet18, nn, Learner
from fast_cam.all import *
from fast_cam.capture import _class_grads
from conftest import snapshot, assert_same, rel_err, hooks_of

KINDS = ('circle','square','triangle')

def make_multi(path, n=16, sz=48):
    "Images with one or two of circle/square/triangle, and a df `fname, labels` (labels space-separated, as `from_df(label_delim=' ')` reads them)"
    path.mkdir(parents=True, exist_ok=True)
    rng,rows = np.random.default_rng(0),[]
    for i in range(n):
        ls = sorted(set(rng.choice(KINDS, 1+i%2, replace=False)))
        im = Image.new('RGB', (sz,sz), (20,20,20)); d = ImageDraw.Draw(im)
        for j,k in enumerate(ls):
            x0,y0 = 3+24*j, 4+int(rng.integers(0,20))
            if k=='circle': d.ellipse([x0,y0,x0+18,y0+18], fill=(230,200,40))
            elif k=='square': d.rectangle([x0,y0,x0+18,y0+18], fill=(40,200,230))
            else: d.polygon([(x0,y0+18),(x0+9,y0),(x0+18,y0+18)], fill=(230,40,200))
        im.save(path/f'{i}.png'); rows.append((f'{i}.png', ' '.join(ls)))
    return pd.DataFrame(rows, columns=['fname','labels'])

@pytest.fixture(scope='module')
def mdls(tmp_path_factory):
    p = tmp_path_factory.mktemp('mlshapes')
    return ImageDataLoaders.from_df(make_multi(p), p, label_delim=' ', item_tfms=Resize(64), bs=4, num_workers=0, valid_pct=.25, seed=0)

@pytest.fixture(scope='module')
def mlearn(mdls):
    "fastai's multi-label vision_learner: BCEWithLogitsLossFlat(thresh=0.5), sigmoid outputs"
    torch.manual_seed(0)
    return vision_learner(mdls, resnet18, pretrained=False)

@pytest.fixture(scope='module')
def batch(mdls): return mdls.one_batch()

def test_is_multi_label(mlearn, learn):
    assert multi_label(mlearn)==0.5 and multi_label(learn) is None
    assert list(mlearn.dls.vocab)==list(KINDS)

def test_none_is_top_label(mlearn, batch):
    xb,_ = batch
    mp,pr = mlearn.gradcam(xb, with_preds=True)
    assert torch.allclose(pr, mlearn.model.eval()(xb).sigmoid(), atol=1e-5)  # sigmoid, not softmax
    assert torch.equal(mp, mlearn.gradcam(xb, target=pr.argmax(1)))

# ---- target='all'

@pytest.mark.parametrize('method', ['gradcam','gradcampp','xgradcam','layercam','hirescam'])
def test_all_equals_one_call_per_class(mlearn, batch, method):
    xb,_ = batch
    m = mlearn.model.train(); s = snapshot(m)
    a = mlearn.heatmap(xb, method, target='all')
    assert_same(m, s)
    assert a.shape[:2]==(len(xb), 3) and a.dtype==torch.float32
    ref = torch.stack([mlearn.heatmap(xb, method, target=c) for c in range(3)], 1)
    assert ref.abs().max()>0 and rel_err(a, ref) < 1e-5
    # batch equals items
    assert rel_err(torch.cat([mlearn.heatmap(xb[i:i+1], method, target='all') for i in range(len(xb))]), a) < 1e-5

def test_all_several_layers_and_tokens_layout(mlearn, batch):
    "Fused layers: each class's fused map is the fused map of that class"
    xb,_ = batch
    ls = [[0,6],[0,7]]
    a = mlearn.gradcam(xb, target='all', layer=ls)
    assert rel_err(a[:,2], mlearn.gradcam(xb, target=2, layer=ls)) < 1e-5

def test_all_loop_path_equals_batched(mlearn, batch):
    "The two ways of the capture engine: vmapped (is_grads_batched) and a loop over the classes on the same graph"
    xb,_ = batch
    m = mlearn.model
    l = get_module(m, [0,7])
    c1,c2 = capture(m, xb, [l], 'all'),capture(m, xb, [l], 'all', batched=False)
    assert c1.grads[0].shape==(3, *c1.acts[0].shape)
    assert rel_err(c1.grads[0], c2.grads[0]) < 1e-5
    for c in range(3): assert rel_err(c1.grads[0][c], capture(m, xb, [l], c).grads[0]) < 1e-5
    assert hooks_of(m)==[]

class _NoVmap(torch.autograd.Function):
    "An op whose backward reads a Python number from the gradient (`.item()`): vmap, so `is_grads_batched`, cannot batch through it"
    @staticmethod
    def forward(ctx, x): return x*2
    @staticmethod
    def backward(ctx, g): return g*2 if g.abs().sum().item()>=0 else g

class _Odd(nn.Module):
    def forward(self, x): return _NoVmap.apply(x)

def test_all_falls_back_to_loop():
    "A model vmap cannot batch: a warning, then the loop over classes gives the same maps as one call per class"
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.ReLU(), _Odd(), nn.Conv2d(8,8,3,padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8,4)).eval()
    xb = torch.randn(2,3,16,16)
    with pytest.warns(UserWarning, match='looping over the 4 classes'): a = explain(m, xb, 'gradcam', target='all', layer=m[1])
    ref = torch.stack([explain(m, xb, 'gradcam', target=c, layer=m[1]) for c in range(4)], 1)
    assert ref.abs().max()>0 and rel_err(a, ref) < 1e-5
    assert hooks_of(m)==[]

def test_class_grads_shapes():
    x = torch.randn(2,5, requires_grad=True)
    s = torch.stack([x.sum(1), (x**2).sum(1), x[:,0]], 1)
    g1,g2 = _class_grads(s, [x])[0],_class_grads(s, [x], batched=False)[0]
    assert g1.shape==(3,2,5) and torch.allclose(g1, g2)
    assert torch.allclose(g1[1], 2*x.detach()) and torch.allclose(g1[2][:,1:], torch.zeros(2,4))

@pytest.mark.parametrize('method', ['eigencam','scorecam','guided_backprop','guided_gradcam'])
def test_all_refused_says_what_to_pass(mlearn, batch, method):
    with pytest.raises(TargetError, match=r"supported by cam, eigengradcam, gradcam.*target=c\) for c in range"): mlearn.heatmap(batch[0], method, target='all')

def test_method_traits():
    "Traits are attributes of the method, not matched by name"
    assert [get_method(o).guided for o in ('gradcam','guided_backprop','guided_gradcam')]==[False,True,True]
    assert not get_method('guided_backprop').has_layer and get_method('guided_gradcam').has_layer
    assert {k for k,o in methods.items() if o.supports_all}=={'cam','gradcam','gradcampp','gradcamplusplus','xgradcam','layercam',
                                                              'hirescam','gradcam_elementwise','gradcamelementwise','eigengradcam'}
    import fast_cam.show, fast_cam.interpret, fast_cam.callback, fast_cam.gather, fast_cam.metrics, fast_cam.sanity, fast_cam.evaluate
    for mod in (fast_cam.show, fast_cam.interpret, fast_cam.callback, fast_cam.gather, fast_cam.metrics, fast_cam.sanity, fast_cam.evaluate):
        assert not hasattr(mod, '_is_guided') and not re.search(r"\.name\s*(==|in)\s*[('\"]", inspect.getsource(mod))

# ---- target='label'

def test_label_single(learn, dls):
    xb,yb = dls.one_batch()
    assert torch.equal(learn.gradcam((xb,yb), target='label'), learn.gradcam(xb, target=yb))
    assert torch.equal(learn.gradcam((xb,yb), target='actual'), learn.gradcam(xb, target=yb))
    with pytest.raises(TargetError, match='no labels'): learn.gradcam(xb, target='label')

def test_label_multi_is_best_scored_positive(mlearn, batch):
    xb,yb = batch  # fastai's TensorImage and TensorMultiCategory, as `dls.one_batch()` gives them
    out = mlearn.model.eval()(xb).detach().as_subclass(torch.Tensor)
    yb = yb.as_subclass(torch.Tensor)
    want = torch.where(yb>0.5, out, -float('inf')).argmax(1)
    assert ((yb>0.5).sum(1)>1).any()  # some items have two labels: the choice matters
    assert torch.equal(resolve_target('label', out, y=yb), want)
    assert torch.equal(mlearn.gradcam((xb,yb), target='label'), mlearn.gradcam(xb, target=want))
    y0 = yb.clone(); y0[0] = 0
    with pytest.raises(TargetError, match=r'items \[0\] have none'): mlearn.gradcam((xb,y0), target='label')
    assert torch.equal(mlearn.gradcam(batch, target='label'), mlearn.gradcam(xb, target=want))

# ---- show, top losses

def test_show_one_panel_per_predicted_label(mlearn, batch):
    xb,_ = batch
    pr = mlearn.model.eval()(xb[:2]).detach().sigmoid().as_subclass(torch.Tensor)
    old = mlearn.loss_func.thresh
    try:
        mlearn.loss_func.thresh = float(pr.median())  # some items over it with several labels, maybe one with none
        axs = mlearn.show_gradcam(xb[:2])
        tts = [a.get_title() for a in axs if a.images]
        want = []
        for p in pr:
            ls = [int(j) for j in p.argsort(descending=True) if p[j]>mlearn.loss_func.thresh] or [int(p.argmax())]
            want += [f"{KINDS[j]} / {p[j]:.2f}" for j in ls]
        assert tts==want and len(tts)>2
    finally: mlearn.loss_func.thresh = old; plt.close('all')

def test_show_explicit_target_and_all(mlearn, batch):
    xb,_ = batch
    axs = mlearn.show_gradcam(xb[:2], target='square')
    assert [a.get_title().split(' / ')[0] for a in axs if a.images]==['square']*2
    with pytest.raises(TargetError, match="target='all'"): mlearn.show_gradcam(xb[:2], target='all')
    plt.close('all')

def test_plot_top_losses_multi(mlearn):
    with mlearn.no_bar(): interp = CAMInterpretation.from_learner(mlearn)
    axs = interp.plot_top_losses(3)
    tts = [a.get_title() for a in axs if a.images]
    _,idx = interp.top_losses(3)
    with mlearn.no_bar(): _,preds,targs,_,_ = interp[idx]
    dec,tg = preds>0.5,targs>0.5
    want = []
    for i in range(3):
        bad = (dec[i]!=tg[i]).nonzero()[:,0].tolist()
        want += [f"Image {i}: {KINDS[c]}\n{'false positive' if dec[i,c] else 'missed'}" for c in bad] or [f"Image {i}: {KINDS[int(preds[i].argmax())]}\nright"]
    assert [t.split(': ')[0]+': '+t.split(': ')[1] for t in tts]==want
    assert list(interp.table.columns)==['target','predicted','probabilities','loss'] and len(interp.table)==3
    plt.close('all')

def test_plot_top_losses_fastai_signature(learn):
    "fastai's positional order `plot_top_losses(k, largest)`, its keywords, and the real options in the signature"
    ps = list(inspect.signature(CAMInterpretation.plot_top_losses).parameters)
    assert ps[:3]==['self','k','largest'] and {'nrows','ncols','figsize','method','alpha','cmap','interpolation'}<=set(ps) and 'kwargs' not in ps
    with learn.no_bar(): interp = CAMInterpretation.from_learner(learn)
    axs = interp.plot_top_losses(4, False)
    _,small = interp.top_losses(4, False)
    _,large = interp.top_losses(4, True)
    tts = [a.get_title() for a in axs if a.images and not a.get_title().startswith('actual')]
    assert len(tts)==4
    assert [float(t.split('\n')[1].split(' / ')[0]) for t in tts]==pytest.approx([round(float(o),2) for o in interp.losses[small]], abs=.006)
    assert not torch.equal(small, large)
    axs = interp.plot_top_losses(2, True, nrows=2, ncols=2, figsize=(4,4))
    assert axs[0].figure.get_size_inches().tolist()==[4,4]
    plt.close('all')

def test_plot_top_losses_grid(learn, mlearn):
    "`nrows` alone sets the columns, as in fastai: every item is drawn, a mistake's two panels side by side; a grid too small is a clear error"
    with learn.no_bar(): interp = CAMInterpretation.from_learner(learn)
    axs = interp.plot_top_losses(4, nrows=1, figsize=(12,2.6))
    assert len(axs)==8 and {a.get_subplotspec().rowspan.start for a in axs}=={0}
    main = [a.get_title() for a in axs[::2]]
    assert len([t for t in main if t])==4 and not any(t.startswith('actual') for t in main)
    for a,b in zip(axs[::2], axs[1::2]):
        p,t = a.get_title().split('\n')[0].split('/')
        assert b.get_title().startswith('actual') == (p!=t)
    axs = interp.plot_top_losses(3, ncols=2, show_actual=False)
    assert len([a for a in axs if a.images])==3 and {a.get_subplotspec().rowspan.start for a in axs}=={0,1}
    axs = interp.plot_top_losses(50, show_actual=False)  # more than the validation set holds: all of it
    assert len([a for a in axs if a.images])==len(interp.losses)==4
    with pytest.raises(ValueError, match='nrows=1 by ncols=1'): interp.plot_top_losses(4, nrows=1, ncols=1)
    with mlearn.no_bar(): mi = CAMInterpretation.from_learner(mlearn)
    axs = mi.plot_top_losses(2, nrows=1)
    assert len([a for a in axs if a.images])>=2 and {a.get_subplotspec().rowspan.start for a in axs}=={0}
    plt.close('all')

# ---- get_cams, the callback, evaluate_cams

def test_get_cams_multi(mlearn, mdls):
    dl = mdls.valid
    with mlearn.no_bar(): maps,preds,targs = mlearn.get_cams(dl, target='label')
    assert targs.shape==(len(dl.dataset), 3) and maps.shape[0]==len(dl.dataset)
    ref = torch.cat([mlearn.gradcam((x,y), target='label') for x,y in dl]).cpu()
    torch.testing.assert_close(maps, ref, rtol=0, atol=1e-5)
    with mlearn.no_bar(): allm = mlearn.get_cams(dl, target='all', with_preds=False)
    torch.testing.assert_close(allm[:,1], mlearn.get_cams(dl, target=1, with_preds=False), rtol=0, atol=1e-5)

def test_get_cams_manifest_multi(mlearn, mdls, tmp_path):
    with mlearn.no_bar(): mlearn.get_cams(mdls.valid, target='label', out=tmp_path)
    df = pd.read_csv(tmp_path/'manifest.csv')
    assert len(df)==len(mdls.valid.dataset) and all(set(a.split(';'))<=set(KINDS) for a in df.actual)
    assert all(e in a.split(';') for e,a in zip(df.explained, df.actual))  # 'label': one of the item's own labels

def test_callback_multi(mdls):
    torch.manual_seed(0)
    l = vision_learner(mdls, resnet18, pretrained=False)
    cb = CAMCallback(n=3, target='label')
    with l.no_bar(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        l.fit(1, 1e-3, cbs=cb)
    h = l.cam_history
    assert h.epochs==[-1,0] and h.targs.shape==(3,3) and h.probs.shape==(2,3,3)
    for r in h.records:  # each explained label is a positive label of its item
        assert all(h.targs[i, int(t)]>0.5 for i,t in enumerate(r['targets']))
    h.show(); plt.close('all')

def test_evaluate_cams_multi(mlearn, mdls, batch):
    with mlearn.no_bar(): ev = mlearn.evaluate_cams(mdls.valid, methods=('gradcam','uniform'), metrics=['deletion','avg_drop'], target='label', steps=4)
    assert ev.df.shape==(2,2) and np.isfinite(ev.df.values).all()
    # scores are sigmoid probabilities for a multi-label Learner: deletion's curve starts at the label's probability
    xb,yb = batch
    idx = resolve_target('label', mlearn.model.eval()(xb).detach().as_subclass(torch.Tensor), y=yb)
    _,cv = deletion(mlearn, xb, mlearn.gradcam(xb, target=idx), target=idx, steps=2)
    p = mlearn.model(xb).detach().sigmoid().as_subclass(torch.Tensor).gather(1, idx[:,None])[:,0]
    torch.testing.assert_close(cv[:,0], p, rtol=0, atol=1e-5)
