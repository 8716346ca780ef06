"""Does fast_cam give a map on the timm zoo? The smallest variant of each timm family, random weights, each built with
fastai's `vision_learner(dls, name, pretrained=False)` on a tiny `Shapes` data set at 96 px (at its own input size when
it takes only that one), through Grad-CAM, Grad-CAM++, LayerCAM, Eigen-CAM, guided Grad-CAM and `show_gradcam`.

A model *works* when every call gives finite float32 maps of the documented shape and leaves the model's state as it
was (parameters, `.grad`, training flags, `requires_grad`, grad mode, hooks). A *clear refusal* is a `CAMError` with its
message; a *raw error* is anything else.

    python benchmarks/zoo.py                      # every model; writes benchmarks/ZOO.md (about an hour on 2 CPU cores)
    python benchmarks/zoo.py --quick              # 13 models (QUICK); prints, writes nothing, exits 1 unless all work
    python benchmarks/zoo.py --models a,b         # these models only; prints, writes nothing
    python benchmarks/zoo.py --all-methods        # every method of `fast_cam.methods` on every model: benchmarks/ZOO_METHODS.md

With `--all-methods` each of the ~34 methods runs on its own (a failure of one does not stop the others), with the
cheap settings of `CHEAP` (fewer channels, samples and steps: the same code paths at a fraction of the forwards), and
the record of each model is appended to a JSON-lines file as it is done, so a stopped run goes on where it stopped.
"""
import os, sys, time, argparse, json, traceback, warnings, gc
os.environ.setdefault('MPLBACKEND', 'Agg')
warnings.filterwarnings('ignore')
from pathlib import Path
import torch, timm, fastai
from timm.models._registry import _model_to_module
from fastai.vision.all import *
from fast_cam.all import *
from fast_cam.data import Shapes
sys.path.insert(0, str(Path(__file__).parent.parent/'tests'))
from conftest import snapshot, assert_same

# family: the timm module that defines the model; the smallest variant of each
MODELS = """
resnet18 resnet10t resnet26d resnext26ts seresnext26t_32x4d ecaresnet26t skresnet18 legacy_seresnet18 resnetv2_18 res2net50_14w_8s
resnest14d regnetx_002 regnety_002 regnetz_b16 efficientnet_b0 efficientnet_lite0 efficientnetv2_rw_t tinynet_e mixnet_s spnasnet_100
mnasnet_small mobilenetv1_100 mobilenetv2_050 mobilenetv3_small_050 mobilenetv4_conv_small lcnet_050 hardcorenas_a
convnext_atto convnextv2_atto densenet121 dla46_c dpn48b ghostnet_100 ghostnetv2_100 repghostnet_050 hrnet_w18_small inception_v3
inception_next_atto xception41 rexnet_100 selecsls42b tresnet_m vgg11 repvgg_a0 gernet_s cspresnet50 cs3darknet_s darknet17
nf_regnet_b0 nf_resnet26 ese_vovnet19b_slim hgnetv2_b0 hgnet_tiny mobileone_s0 fastvit_t8 edgenext_xx_small efficientvit_b0
efficientvit_m0 starnet_s050 mambaout_femto shvit_s1 fasternet_t0 repvit_m0_9 rdnet_tiny botnet26t_256 halonet26t lambda_resnet26t
vit_tiny_patch16_224 vit_tiny_r_s16_p8_224 vit_little_patch16_reg4_gap_256 deit_tiny_patch16_224 deit_tiny_distilled_patch16_224
deit3_small_patch16_224 eva02_tiny_patch14_224 beit_base_patch16_224 flexivit_small swin_tiny_patch4_window7_224
swinv2_tiny_window8_256 swinv2_cr_tiny_ns_224 maxvit_pico_rw_256 coatnet_nano_rw_224 maxxvit_rmlp_nano_rw_256 pvt_v2_b0
twins_pcpvt_small twins_svt_small mixer_s16_224 resmlp_12_224 gmlp_ti16_224 levit_128s levit_conv_128s efficientformer_l1
efficientformerv2_s0 mobilevit_xxs mobilevitv2_050 tiny_vit_5m_224 davit_tiny focalnet_tiny_srf coat_lite_tiny convit_tiny
crossvit_tiny_240 xcit_nano_12_p16_224 cait_xxs24_224 pit_ti_224 visformer_tiny gcvit_xxtiny mvitv2_tiny poolformer_s12
poolformerv2_s12 convmixer_768_32 volo_d1_224 nest_tiny sequencer2d_s tnt_s_patch16_224 hiera_tiny_224 nextvit_small
efficientvim_m1 csatv2_21m vitamin_small_224
""".split()
# the quick subset: one model per layout fast_cam reads, and each model a fault was once found on
QUICK = ['resnet18', 'tresnet_m', 'csatv2_21m', 'selecsls42b', 'ghostnet_100', 'mixer_s16_224', 'sequencer2d_s', 'levit_128s',
         'tnt_s_patch16_224', 'nest_tiny', 'efficientformer_l1', 'vit_tiny_patch16_224', 'swinv2_cr_tiny_ns_224']
METHODS = ('gradcam', 'gradcampp', 'layercam', 'eigencam', 'guided_gradcam')
# --all-methods: every method once (aliases share a class), each with settings that keep its forwards few
ALL = sorted({type(v): v.name for v in methods.values()}.values())
CHEAP = dict(scorecam=dict(max_channels=16), ablationcam=dict(max_channels=16), sscam=dict(max_channels=8, n_samples=2),
             iscam=dict(max_channels=8, n_samples=2), refinecam=dict(max_channels=16), smoothgradcampp=dict(n_samples=2),
             integrated_gradients=dict(n_steps=4), smoothgrad=dict(n_samples=2), vargrad=dict(n_samples=2),
             guided_backprop=dict(n_samples=1), sess=dict(n_scales=1), occlusion=dict(sliding_window_shapes=(3,32,32), strides=(3,32,32)))

p = argparse.ArgumentParser()
p.add_argument('--quick', action='store_true', help=f"only {', '.join(QUICK)}")
p.add_argument('--models', default=None, help='comma-separated timm names')
p.add_argument('--size', type=int, default=96, help='input size for models that take any size')
p.add_argument('--threads', type=int, default=2)
p.add_argument('--out', default=None, help='the report (default: benchmarks/ZOO.md, or ZOO_METHODS.md with --all-methods)')
p.add_argument('--all-methods', action='store_true', help='every method of `fast_cam.methods`, each on its own')
p.add_argument('--jsonl', default=None, help='with --all-methods: the records so far (default: benchmarks/ZOO_METHODS.jsonl)')
a = p.parse_args()
a.out = a.out or str(Path(__file__).parent/('ZOO_METHODS.md' if a.all_methods else 'ZOO.md'))
torch.set_num_threads(a.threads)
names = QUICK if a.quick else a.models.split(',') if a.models else MODELS
write = not (a.quick or a.models)

def family(name): return _model_to_module.get(name, '?')

_dls = {}
def shapes_dls(sz):
    "A tiny `Shapes` DataLoaders at `sz` px (4 classes, 8 images)"
    if sz not in _dls: _dls[sz] = Shapes(8, size=sz, seed=0).dls(bs=4, valid_pct=0.25)
    return _dls[sz]

def native_size(learn):
    "The input size the timm model was built for"
    t = next((o for o in learn.model.modules() if hasattr(o, 'pretrained_cfg')), None)
    return int(t.pretrained_cfg.get('input_size', (3,224,224))[-1]) if t is not None else 224

class Unrunnable(Exception): "fastai's own `learn.model(xb)` fails: no explainer can help"

def runs(learn, sz):
    "Does the Learner's model run on a batch of `sz` px (as `learn.predict` would)?"
    try:
        with torch.no_grad(): learn.model.eval()(torch.zeros(1, 3, sz, sz))
        return True
    except Exception as e: runs.err = f'{type(e).__name__}: {str(e)[:200]}'; return False

def make_learner(name):
    "`vision_learner` at `a.size` px, or at the model's own size when it refuses that one (the size is the only thing tried)"
    torch.manual_seed(0)
    learn = vision_learner(shapes_dls(a.size), name, pretrained=False)
    if runs(learn, a.size): sz = a.size
    else:
        sz = native_size(learn)
        torch.manual_seed(0)
        learn = vision_learner(shapes_dls(sz), name, pretrained=False)
        if not runs(learn, sz): raise Unrunnable(runs.err)
    learn.model.train()  # as after `vision_learner`: fast_cam must give it back in training mode
    return learn, sz

def check_map(mp, want, what):
    assert isinstance(mp, torch.Tensor) and mp.dtype==torch.float32, f'{what}: {type(mp).__name__} {getattr(mp, "dtype", "")}'
    assert tuple(mp.shape[:len(want)])==tuple(want) and mp.ndim==len(want)+(2 if len(want)==1 else 0), f'{what}: shape {tuple(mp.shape)}'
    assert torch.isfinite(mp).all(), f'{what}: not finite'

def run_one(name):
    rec = dict(model=name, family=family(name), size=None, result=None, layer='', map='', nonzero='', note='', secs=0.)
    t0 = time.perf_counter()
    try:
        learn,sz = make_learner(name)
        rec['size'] = sz
        dls = learn.dls
        xb = dls.one_batch()[0][:2].as_subclass(torch.Tensor)
        img = PILImage.create(dls.shapes.images[0])
        m = learn.model
        s = snapshot(m)
        hw = None
        for meth in METHODS:
            mp = learn.heatmap(xb, method=meth)
            if meth=='guided_gradcam': check_map(mp, (2, 3, sz, sz), meth)
            else:
                check_map(mp, (2,), meth)
                hw = ifnone(hw, tuple(mp.shape[1:]))
                assert tuple(mp.shape[1:])==hw, f'{meth}: map {tuple(mp.shape[1:])}, gradcam gave {hw}'
                if meth=='gradcam': rec['nonzero'] = f'{(mp.flatten(1).abs().amax(1)>0).float().mean().item():.1f}'
            assert_same(m, s)
        ax = learn.show_gradcam(img)
        assert ax is not None, 'show_gradcam returned nothing'
        plt.close('all')
        assert_same(m, s)
        rec['layer'] = module_name(m, cam_layer(learn))
        rec['map'] = f'{hw[0]}×{hw[1]}'
        rec['result'] = 'works'
    except Unrunnable as e:
        rec['result'],rec['note'] = 'fastai cannot run it',f'`learn.model(xb)` fails without fast_cam: {e}'
    except CAMError as e:
        rec['result'],rec['note'] = 'refused',f'{type(e).__name__}: {str(e)[:300]}'
    except AssertionError as e:
        rec['result'],rec['note'] = 'wrong',str(e)[:300]
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        rec['result'],rec['note'] = 'raw',f'{type(e).__name__}: {str(e)[:200]} ({Path(tb.filename).name}:{tb.lineno})'
    finally:
        plt.close('all')
    rec['secs'] = round(time.perf_counter()-t0, 1)
    return rec

def table(recs):
    n = len(recs)
    cnt = {k: sum(r['result']==k for r in recs) for k in ('works','refused','wrong','raw','fastai cannot run it')}
    ok = [r for r in recs if r['result']!='fastai cannot run it']
    n,fams = len(ok),len({r['family'] for r in ok})
    res = [f"{n} models from {fams} timm families: **{cnt['works']} work** ({100*cnt['works']/max(n,1):.1f}%), {cnt['refused']} clear refusals, "
           f"{cnt['wrong']} wrong maps or state changed, {cnt['raw']} raw errors. "
           f"Left out: {cnt['fastai cannot run it']} models whose `vision_learner` model fails on its own input, without fast_cam.", '',
           '| model | family | input | result | automatic layer | map | items with a non-zero Grad-CAM | seconds | note |', '|---|---|---|---|---|---|---|---|---|']
    for r in recs:
        note = r['note'].replace('|', '\\|').replace('\n', ' ')
        res.append(f"| `{r['model']}` | {r['family']} | {r['size'] or ''} | {r['result']} | `{r['layer']}` | {r['map']} | {r['nonzero']} | {r['secs']} | {note} |")
    return '\n'.join(res), cnt

def _outcome(f):
    "Run `f`: ('works', '') or the kind of failure and its message"
    try: f(); return 'works',''
    except CAMError as e: return 'refused',f'{type(e).__name__}: {str(e)[:300]}'
    except AssertionError as e: return 'wrong',str(e)[:300]
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return 'raw',f'{type(e).__name__}: {str(e)[:200]} ({Path(tb.filename).name}:{tb.lineno})'

def run_methods(name):
    "Every method on `name`, each on its own: `{method: (result, note)}`, and the model's size and seconds"
    rec = dict(model=name, family=family(name), size=None, methods={}, note='', secs=0.)
    t0 = time.perf_counter()
    try: learn,sz = make_learner(name)
    except Unrunnable as e: rec['note'] = f'fastai cannot run it: {e}'; return rec
    except Exception as e: rec['note'] = f'no Learner: {type(e).__name__}: {str(e)[:200]}'; return rec
    rec['size'] = sz
    xb = learn.dls.one_batch()[0][:2].as_subclass(torch.Tensor)
    m = learn.model
    for meth in ALL:
        t1 = time.perf_counter()
        def f():
            s = snapshot(m)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    mp = learn.heatmap(xb, method=meth, **CHEAP.get(meth, {}))
            finally: assert_same(m, s)
            check_map(mp, (2, 3, sz, sz) if get_method(meth).guided else (2,), meth)
        res,note = _outcome(f)
        rec['methods'][meth] = (res, note, round(time.perf_counter()-t1, 2))
        gc.collect()
    rec['secs'] = round(time.perf_counter()-t0, 1)
    return rec

def methods_table(recs):
    "The summary per method, then every call that did not work, with its message"
    ok = [r for r in recs if r['size']]
    kinds = ('works','refused','wrong','raw')
    cnt = {k: sum(r['methods'][mt][0]==k for r in ok for mt in ALL if mt in r['methods']) for k in kinds}
    n = sum(len(r['methods']) for r in ok)
    res = [f"{len(ok)} models from {len({r['family'] for r in ok})} timm families × {len(ALL)} methods = {n} calls: "
           f"**{cnt['works']} work**, {cnt['refused']} clear refusals, {cnt['wrong']} wrong maps or state changed, "
           f"{cnt['raw']} raw errors. Left out: {len(recs)-len(ok)} models fastai cannot run on their own input.", '',
           '| method | works | refused | wrong | raw | median seconds |', '|---|---|---|---|---|---|']
    for mt in ALL:
        rs = [r['methods'][mt] for r in ok if mt in r['methods']]
        sec = sorted(o[2] for o in rs)
        res.append(f"| `{mt}` | " + ' | '.join(str(sum(o[0]==k for o in rs)) for k in kinds) + f" | {sec[len(sec)//2] if sec else ''} |")
    res += ['', '### Calls that did not work', '', 'A refusal is the `CAMError` the user sees; its message says why and what to do instead.', '',
            '| model | method | result | message |', '|---|---|---|---|']
    for r in ok:
        for mt,(kind,note,_) in r['methods'].items():
            if kind!='works': res.append(f"| `{r['model']}` | `{mt}` | {kind} | {note.replace('|', chr(92)+'|').replace(chr(10), ' ')} |")
    return '\n'.join(res), cnt

if a.all_methods:
    jl = Path(a.jsonl or Path(__file__).parent/'ZOO_METHODS.jsonl')
    done = {}
    if jl.exists(): done = {r['model']: r for r in map(json.loads, jl.read_text().splitlines()) if r.get('methods') or r['note']}
    recs = []
    for nm in names:
        if nm in done: recs.append(done[nm]); continue
        r = run_methods(nm)
        recs.append(r)
        with jl.open('a') as fh: fh.write(json.dumps(r, ensure_ascii=False) + '\n')
        bad = {k: v[0] for k,v in r['methods'].items() if v[0] not in ('works','refused')}
        print(f"{nm}: {r['secs']} s, {sum(v[0]=='works' for v in r['methods'].values())}/{len(r['methods'])} work {bad or ''} {r['note']}", flush=True)
    md,cnt = methods_table(recs)
    print(md.splitlines()[0])
    if not a.models:
        head = (f"# Every fast_cam method on the timm zoo\n\nWritten by `python benchmarks/zoo.py --all-methods` (timm {timm.__version__}, "
                f"torch {torch.__version__}, fastai {fastai.__version__}). The models and their inputs are those of `ZOO.md` (random weights, "
                f"batch of 2); every method of `fast_cam.methods` runs on each, on its own, with the settings of `CHEAP` in the script "
                f"({', '.join(f'{k}: ' + ', '.join(f'{a}={b}' for a,b in v.items()) for k,v in CHEAP.items())}). "
                "A call *works* when it gives finite float32 maps of the documented shape and leaves the model's state as it was.\n\n")
        Path(a.out).write_text(head + md + '\n')
    sys.exit(0)

recs = []
for nm in names:
    r = run_one(nm)
    recs.append(r)
    print(json.dumps(r, ensure_ascii=False), flush=True)
    gc.collect()
md,cnt = table(recs)
print(md.splitlines()[0])
if write:
    head = (f"# fast_cam on the timm zoo\n\nWritten by `python benchmarks/zoo.py` (timm {timm.__version__}, torch {torch.__version__}, fastai "
            f"{fastai.__version__}). " + __doc__.split('\n\n')[0].replace('\n', ' ') + ' ' + __doc__.split('\n\n')[1].replace('\n', ' ') +
            " The map column is the Grad-CAM map at the automatic layer; a zero map is a legitimate answer of a random network "
            "(a ReLU of a weighted sum), so the non-zero column is information, not a criterion.\n\n")
    Path(a.out).write_text(head + md + '\n')
if a.quick and cnt['works']!=len(recs): sys.exit(1)
