"No input breaks it: every method, on inputs, targets, models and layers drawn by hypothesis, gives finite float32 maps of the documented shape or a `CAMError` that says what to do, and leaves the model as it was."
# `HYPOTHESIS_PROFILE=long pytest tests/test_properties.py` (or `python benchmarks/properties.py`) draws many more examples.
import os, copy, warnings, pytest, torch, numpy as np, pandas as pd
from PIL import Image
from hypothesis import given, settings, HealthCheck, strategies as st
from fastai.vision.all import Learner, noop, ifnone, F, DataBlock, ImageBlock, CategoryBlock, ColReader, Resize, nn, Tensor
from fast_cam.all import *
from conftest import snapshot, assert_same

_hc = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]
settings.register_profile('ci', max_examples=12, deadline=None, derandomize=True, suppress_health_check=_hc, print_blob=True)
settings.register_profile('long', max_examples=300, deadline=None, suppress_health_check=_hc, print_blob=True)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))

# every method of the registry once (aliases such as 'gradcamplusplus' share a class): a method added later is covered here
METHODS = sorted({type(v): v.name for v in methods.values()}.values())
# SS-CAM and IS-CAM with 3 noisy or interpolated copies, not 35 or 10: the same code paths at a tenth of the forwards
OPTS = {'scorecam': dict(bar=False), 'sscam': dict(bar=False, n_samples=3), 'iscam': dict(bar=False, n_samples=3)}
# words a message uses to say what to do instead
FIX = ('pass', 'use', 'pick', 'run', 'check', 'give', 'leave', 'drop', 'call', 'loop', 'crop', 'build', 'normalise', 'train')

def tiny_net(c_in=3, n_out=2):
    "Conv → BN → in-place ReLU stages and a CAM-exact head: every method applies"
    cbr = lambda i,o,s=1: [nn.Conv2d(i, o, 3, stride=s, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
    body = nn.Sequential(*cbr(c_in, 8), *cbr(8, 12, 2), *cbr(12, 12))
    return nn.Sequential(body, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, n_out)))

def dirty(m):
    "A model as a user holds it mid-training: some modules in train mode, a `.grad` filled, a frozen parameter"
    m.train(); m[0][1].eval()
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    m[0][0].weight.grad = None; m[0][3].weight.requires_grad_(False)
    return m

@pytest.fixture(scope='module')
def tiny(dls):
    torch.manual_seed(0)
    return Learner(dls, dirty(tiny_net()))

def explains(learn, method, x, target=None, layer=None, valid=True, ctx=None, **kw):
    """The property: maps or a clear `CAMError`, and the model as it was. `valid`: the call must give maps (a refusal of a valid
    call fails too); False: it must be refused; None: either. Returns the maps or None"""
    m = learn.model if isinstance(learn, Learner) else learn
    # a method for vision transformers only (LeGrad, rollout) refuses the battery's CNNs, saying what to use
    if getattr(get_method(method), 'token_only', False):
        try: vit_parts(m)
        except CAMError: valid = False
    s = snapshot(m)
    try:
        with warnings.catch_warnings(), (ctx or torch.enable_grad)():
            warnings.simplefilter('ignore')
            res = explain(learn, x, method, target, layer, **OPTS.get(method, {}), **kw)
    except CAMError as e:
        assert_same(m, s)
        msg = str(e)
        assert len(msg)>40 and any(w in msg.lower() for w in FIX), f"an unhelpful message: {msg!r}"
        assert valid is not True, f"{method} refused a valid call: {type(e).__name__}: {msg}"
        return None
    except Exception as e:
        raise AssertionError(f"{method} raised a raw {type(e).__name__}: {e}") from e
    assert_same(m, s)
    assert valid is not False, f"{method} gave maps where it should refuse"
    assert isinstance(res, Tensor) and type(res) is Tensor, type(res)
    assert res.dtype==torch.float32 and torch.isfinite(res).all(), 'maps must be finite float32'
    return res

def check_shape(res, method, n, hw=None, C=None):
    "CAMs `[n,h,w]` (`[n,C,h,w]` for target='all'), guided maps `[n,c,H,W]` at the input's size `hw`"
    if res is None: return
    meth = get_method(method)
    if meth.guided: assert res.shape[0]==n and res.ndim==4 and (hw is None or tuple(res.shape[-2:])==tuple(hw)), res.shape
    else:
        assert res.shape[0]==n and res.ndim==(3 if C is None else 4), res.shape
        if C is not None: assert res.shape[1]==C
        assert min(res.shape[-2:])>=1

# --- inputs --------------------------------------------------------------------------------------------------------------

sides = st.one_of(st.integers(8, 96), st.sampled_from([255, 320]))  # tiny, odd, non-square and large
def _img(mode, w, h, seed):
    rng = np.random.default_rng(seed)
    if mode=='I;16': return Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    a = rng.integers(0, 255, (h, w, len(mode)), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if mode=='L' else a, mode)

@st.composite
def image_inputs(draw, tmp):
    "`(x, n, valid, tensor_hw)`: one input in any form the contract names, with whether it must give maps"
    w,h,seed = draw(sides),draw(sides),draw(st.integers(0, 99))
    kind = draw(st.sampled_from(['png', 'jpeg', 'pil', 'np_uint8', 'np_float', 'np_gray', 'tensor', 'batch', 'tuple', 'list',
                                 'tensor_list', 'empty', 'nan', 'inf', 'channels', 'np_channels', 'ragged', 'int_tensor', 'object']))
    if kind in ('png', 'jpeg'):
        mode = draw(st.sampled_from(['RGB', 'L', 'RGBA', 'I;16'] if kind=='png' else ['RGB', 'L']))
        f = tmp/f'{kind}_{mode.replace(";","")}_{w}x{h}_{seed}.{"png" if kind=="png" else "jpg"}'
        _img(mode, w, h, seed).save(f)
        return f if draw(st.booleans()) else str(f), 1, True, None
    if kind=='pil':  return _img(draw(st.sampled_from(['RGB', 'L', 'RGBA'])), w, h, seed), 1, True, None
    a = np.random.default_rng(seed).random((h, w, 3))
    if kind=='np_uint8': return (a*255).astype(np.uint8), 1, True, None
    if kind=='np_float': return a*draw(st.sampled_from([1., 255.])), 1, True, None
    if kind=='np_gray':  return (a[..., :1] if draw(st.booleans()) else a[..., 0]).astype(np.float32), 1, True, None
    if kind=='np_channels': return a[..., :2] if draw(st.booleans()) else np.concatenate([a, a], -1), 1, False, None
    n = draw(st.integers(1, 3))
    t = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))
    if kind=='tensor': return t[0], 1, True, (h, w)
    if kind=='batch':  return t, n, True, (h, w)
    if kind=='tuple':  return (t, torch.zeros(n, dtype=torch.long)), n, True, (h, w)
    if kind=='tensor_list': return list(t), n, True, (h, w)
    if kind=='list':
        f = tmp/f'list_{w}x{h}_{seed}.png'; _img('RGB', w, h, seed).save(f)
        return [f, _img('L', h, w, seed), (a*255).astype(np.uint8)][:n], n, True, None
    if kind=='empty':  return draw(st.sampled_from([[], t[:0], ()])), 0, False, None
    if kind=='nan':    t[0, 0, 0, 0] = float('nan'); return t, n, False, None
    if kind=='inf':    t[-1, -1, -1, -1] = float('inf'); return t, n, False, None
    if kind=='channels': return torch.randn(n, draw(st.sampled_from([1, 2, 4])), h, w), n, False, None
    if kind=='ragged': return [t[0], torch.randn(3, h+1, w)], 2, False, None
    if kind=='int_tensor': return (t*10).long(), n, False, None
    return draw(st.sampled_from([{'a': 1}, 3.5, None, b'bytes'])), 1, False, None

@pytest.mark.parametrize('method', METHODS)
def test_inputs(tiny, method, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('inputs')
    @given(image_inputs(tmp))
    def prop(inp):
        x,n,valid,hw = inp
        check_shape(explains(tiny, method, x, valid=valid), method, n, hw or (64, 64))
    prop()

def test_missing_and_broken_files(tiny, tmp_path):
    (tmp_path/'empty.png').write_bytes(b'')
    (tmp_path/'text.png').write_text('not an image')
    f = tmp_path/'ok.png'; _img('RGB', 40, 30, 0).save(f)
    (tmp_path/'cut.png').write_bytes(f.read_bytes()[:len(f.read_bytes())//2])
    for p in ['empty.png', 'text.png', 'cut.png', 'nope.png']:
        with pytest.raises(InputError, match='(?i)file|image'): tiny.gradcam(tmp_path/p)
    with pytest.raises(MissingFileError): tiny.gradcam([f, tmp_path/'nope.png'])

@pytest.fixture(scope='module')
def items_learn():
    "A Learner over `Shapes`, whose items are indices read by its DataBlock"
    return shapes_learner(n=40, epochs=0, seed=2)

@pytest.fixture(scope='module')
def df_learn(shapes):
    fs = sorted(shapes.glob('*/*.png'))
    df = pd.DataFrame({'fname': [f'{f.parent.name}/{f.name}' for f in fs], 'label': [f.parent.name for f in fs]})
    db = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ColReader('fname', pref=f'{shapes}/'), get_y=ColReader('label'), item_tfms=Resize(32))
    torch.manual_seed(0)
    return Learner(db.dataloaders(df, bs=4, num_workers=0), tiny_net()), df

@pytest.mark.parametrize('method', METHODS)
def test_dataset_items(items_learn, df_learn, method):
    "Items in the data set's own form (indices, DataFrame rows) go through `dls.test_dl`; ones it cannot read are refused"
    dl,df = df_learn
    @given(st.lists(st.integers(-45, 45), max_size=3), st.lists(st.integers(0, len(df)-1), min_size=1, max_size=3))
    def prop(idxs, rows):
        ok = all(-40<=i<40 for i in idxs) and len(idxs)>0
        check_shape(explains(items_learn, method, idxs, valid=ok), method, len(idxs), (64, 64))
        check_shape(explains(dl, method, df.iloc[rows], valid=True), method, len(rows), (32, 32))
        check_shape(explains(dl, method, [df.iloc[r] for r in rows], valid=True), method, len(rows), (32, 32))
    prop()

# --- targets -------------------------------------------------------------------------------------------------------------

def _typo(s, i): return s[:i%len(s)] + s[i%len(s)+1:] if i%3 else s + 'x'

@st.composite
def targets(draw, vocab, n, C):
    "`(target, valid, C_out, with_labels)`: a target in any form the contract names"
    kind = draw(st.sampled_from(['none', 'int', 'label', 'typo', 'list', 'tensor', 'float_tensor', 'all', 'actual', 'actual_nolabels',
                                 'fn', 'fn_bad', 'np', 'bool', 'float']))
    if kind=='none': return None, True, None, False
    if kind=='int':
        t = draw(st.integers(-C-2, C+2)); return t, -C<=t<C, None, False
    if kind=='label': return draw(st.sampled_from(vocab)), True, None, False
    if kind=='typo':  return _typo(draw(st.sampled_from(vocab)), draw(st.integers(0, 9))), False, None, False
    k = draw(st.integers(0, n+2))
    ts = draw(st.lists(st.integers(-C-1, C), min_size=k, max_size=k))
    ok = k==n and all(-C<=t<C for t in ts)
    if kind=='list':   return [vocab[t] if t>=0 and draw(st.booleans()) and t<C else t for t in ts], ok, None, False
    if kind=='tensor': return torch.tensor(ts, dtype=torch.long), ok, None, False
    if kind=='np':     return np.array(ts, dtype=np.int64), ok, None, False
    if kind=='float_tensor': return torch.rand(n), False, None, False
    if kind=='all':    return 'all', True, C, False
    if kind=='actual': return draw(st.sampled_from(['label', 'actual'])), True, None, True
    if kind=='actual_nolabels': return 'label', False, None, False
    if kind=='fn':     c = draw(st.integers(0, C-1)); return (lambda o: o[:, c]), True, None, False
    if kind=='fn_bad': return draw(st.sampled_from([lambda o: o, lambda o: o[:, 0].sum(), lambda o: o[:-1, 0], lambda o: [1.]*len(o)])), False, None, False
    if kind=='bool':   return True, False, None, False
    return 1.5, False, None, False

def _target_ok(meth, target, valid):
    "Whether the method itself takes a valid target: target='all' for the CAM family only, a callable not for exact CAM"
    if not valid: return False
    if is_all(target) and not meth.supports_all: return False
    # exact CAM reads the head's weights of a class, Finer-CAM the classes similar to it: both need a class
    if meth.name in ('cam','finercam') and is_custom(target): return False
    return True

@pytest.mark.parametrize('method', METHODS)
def test_targets(tiny, method):
    xb,yb = tiny.dls.one_batch()
    xb,yb = xb[:3],yb[:3]
    vocab,C = list(tiny.dls.vocab),len(tiny.dls.vocab)
    meth = get_method(method)
    @given(targets(vocab, 3, C))
    def prop(t):
        target,valid,Cout,lbl = t
        res = explains(tiny, method, (xb, yb) if lbl else xb, target, valid=_target_ok(meth, target, valid))
        check_shape(res, method, 3, xb.shape[-2:], Cout)
    prop()

# --- models --------------------------------------------------------------------------------------------------------------

def _resnet(dls):
    from fastai.vision.all import vision_learner, resnet18
    torch.manual_seed(0)
    return vision_learner(dls, resnet18, pretrained=False)  # torchvision's in-place ReLUs, fastai's concat-pool head

def _vit(dls, kind):
    "A tiny vision transformer (8x8 patches of the 64 px files, 2 blocks) of timm or torchvision, held by a `Learner` as it is"
    torch.manual_seed(0)
    if kind=='timm':
        timm = pytest.importorskip('timm')
        m = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=len(dls.vocab), img_size=64, patch_size=8,
                              depth=2, embed_dim=32, num_heads=2)
    else:
        from torchvision.models import VisionTransformer
        m = VisionTransformer(image_size=64, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=len(dls.vocab))
        nn.init.normal_(m.heads.head.weight, std=.1)  # torchvision starts its head at zero: every gradient would be zero
    return Learner(dls, m)

def _copy(t, f=noop):
    "A Learner on a copy of `t`'s model (same weights, modes, `.grad`), changed by `f`"
    m = copy.deepcopy(t.model)
    return Learner(t.dls, ifnone(f(m), m))

MODELS = {  # name: (the Learner from `tiny`, context of the call, tolerance against float32 on the same weights)
    'float32':   (lambda t: t, None, 0),
    'float64':   (lambda t: _copy(t, lambda m: m.double()), None, 1e-4),
    'half':      (lambda t: _copy(t, lambda m: m.half()), None, .05),
    'bfloat16':  (lambda t: _copy(t, lambda m: m.bfloat16()), None, .05),
    'autocast':  (lambda t: t, lambda: torch.autocast('cpu', dtype=torch.bfloat16), .05),
    'no_grad':   (lambda t: t, torch.no_grad, 0),
    'inference': (lambda t: t, torch.inference_mode, 0),
    'frozen':    (lambda t: _copy(t, lambda m: m.requires_grad_(False)), None, 0),
    'resnet18':  (lambda t: _resnet(t.dls), None, None),
    'vit_timm':  (lambda t: _vit(t.dls, 'timm'), None, None),
    'vit_torchvision': (lambda t: _vit(t.dls, 'torchvision'), None, None),
}
# exact CAM needs a GAP → Linear head: fastai's default head and a ViT's class-token head are refused, with the fix in the message
NO_CAM = {'resnet18', 'vit_timm', 'vit_torchvision'}

# methods whose maps are differences of the scores of perturbed copies (occlusion)
SCORE_DIFFS = {'occlusion'}

@pytest.mark.parametrize('kind', list(MODELS))
@pytest.mark.parametrize('method', METHODS)
def test_models(tiny, files, method, kind):
    make,ctx,tol = MODELS[kind]
    learn = make(tiny)
    res = explains(learn, method, files, valid=not (method=='cam' and kind in NO_CAM), ctx=ctx)
    check_shape(res, method, len(files), (64, 64))
    if tol is None or res is None: return  # refused (a token-only method on a CNN, CAM without its head)
    if method in SCORE_DIFFS:
        # a difference of two near-equal scores: below half precision on the untrained tiny net, and float32's own
        # rounding (the reference) is ~1e-4 of it
        if tol>=1e-3: return
        tol = max(tol, 1e-3)
    # the same maps as the float32 model, up to the precision the model ran in
    ref = explains(tiny, method, files)
    if tol<1e-3:
        err = (res-ref).abs().max() / ref.abs().max().clamp_min(1e-12)
        assert err <= max(tol, 1e-6), f"{kind}: max error {err:.3g} relative to float32"
    else:  # half precision: pixel-level gradients are noisy one by one, but the map must be the same picture
        cos = F.cosine_similarity(res.flatten(1), ref.flatten(1), dim=1, eps=1e-12)
        assert (cos >= 1-tol).all(), f"{kind}: cosine similarity {cos.min():.3g} to float32"

# --- layers --------------------------------------------------------------------------------------------------------------

def _paths(m, pre=()):
    for i,c in enumerate(m.children()):
        yield list(pre)+[i]
        yield from _paths(c, list(pre)+[i])

@pytest.mark.parametrize('method', METHODS)
def test_layers(tiny, method):
    m = tiny.model
    xb = tiny.dls.one_batch()[0][:2]
    names = [n for n,_ in m.named_modules() if n]
    paths = list(_paths(m))
    mods = list(m.modules())
    layer = st.one_of(st.sampled_from([None, 'last', 'auto']), st.sampled_from(paths),
                      st.lists(st.integers(-4, 9), min_size=1, max_size=4), st.sampled_from(names),
                      st.sampled_from(names).map(lambda s: s+'x'), st.sampled_from(mods), st.just(nn.Conv2d(3, 3, 1)),
                      st.sampled_from([3.5, {'a': 1}]), st.lists(st.sampled_from(['0.2', '0.5', '0.8']), min_size=1, max_size=2))
    @given(layer)
    def prop(l):
        # the automatic layers must work; any other one gives maps or a clear refusal
        valid = True if (l is None or isinstance(l, str) and l in ('last', 'auto')) else None
        check_shape(explains(tiny, method, xb, layer=l, valid=valid), method, 2, xb.shape[-2:])
    prop()

# --- regressions found from outside --------------------------------------------------------------------------------------

class PerSample(nn.Module):
    "A model returning one dict per sample, as torchcam's structured test model does"
    def __init__(self, net, scalar=False): super().__init__(); self.net,self.scalar = net,scalar
    def forward(self, x):
        o = self.net(x)
        return [dict(score=r[1]) if self.scalar else dict(logits=r, aux=torch.zeros(())) for r in o]

@pytest.mark.parametrize('scalar', [False, True])
def test_scorecam_per_sample_outputs(scalar):
    "Score-CAM's masked forwards read a list with one dict per sample row by row (was `IndexError` in `_rows`)"
    torch.manual_seed(0)
    net = tiny_net(n_out=3).eval()
    xb = torch.randn(3, 3, 24, 20)
    f = (lambda o: torch.stack([d['score'] for d in o])) if scalar else (lambda o: torch.stack([d['logits'][1] for d in o]))
    for bs in (2, 3, 32):  # chunks smaller than, equal to and larger than the batch
        got = explain(PerSample(net, scalar), xb, 'scorecam', target=f, bs=bs, bar=False)
        test = explain(net, xb, 'scorecam', target=1, bs=bs, bar=False)
        assert got.shape==(3, 12, 10) and torch.allclose(got, test, atol=1e-6)

def test_model_failure_is_typed(tiny):
    "A model that cannot take the input (a fixed-size flatten) raises a `ModelError` that names the shape, chained to the cause"
    net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), nn.Sequential(nn.Flatten(), nn.Linear(4*8*8, 2)))
    s = snapshot(net)
    with pytest.raises(ModelError, match=r'shape \(1, 3, 16, 16\).*size and channels') as e: explain(net, torch.randn(1, 3, 16, 16))
    assert isinstance(e.value.__cause__, RuntimeError) and isinstance(e.value, RuntimeError)
    assert_same(net, s)
    assert explain(net, torch.randn(1, 3, 8, 8), layer=[0, 0]).shape==(1, 8, 8)

def test_dry_input_warns(dls):
    "The automatic layer of a bare model (no input size) or of DataLoaders that cannot give a batch is chosen at 224 px, with a warning"
    from torchvision.models import resnet18
    with pytest.warns(UserWarning, match='224'): cam_layer(resnet18(weights=None))
    class Broken(type(dls)):
        def one_batch(self): raise RuntimeError('no batch')
    l = Learner(dls, tiny_net())
    l.dls = Broken(*dls.loaders, path=dls.path)
    with pytest.warns(UserWarning, match=r'one_batch\(\)` failed \(RuntimeError: no batch\)'): cam_layer(l)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        cam_layer(l, torch.zeros(1, 3, 64, 64))  # a batch given: no guess, no warning
