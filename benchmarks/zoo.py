"""Does fast_cam give a map on the timm zoo? The smallest variant of each timm family, random weights, each built with
fastai's `vision_learner(dls, name, pretrained=False)` on a tiny `Shapes` data set at 96 px (at its own input size when
it takes only that one), through Grad-CAM, Grad-CAM++, LayerCAM, Eigen-CAM, guided Grad-CAM and `show_gradcam`.

A model *works* when every call gives finite float32 maps of the documented shape and leaves the model's state as it
was (parameters, `.grad`, training flags, `requires_grad`, grad mode, hooks). A *clear refusal* is a `CAMError` with its
message; a *raw error* is anything else.

    python benchmarks/zoo.py                      # every model; writes benchmarks/ZOO.md (about an hour on 2 CPU cores)
    python benchmarks/zoo.py --quick              # 13 models (QUICK); prints, writes nothing, exits 1 unless all work
    python benchmarks/zoo.py --models a,b         # these models only; prints, writes nothing
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

p = argparse.ArgumentParser()
p.add_argument('--quick', action='store_true', help=f"only {', '.join(QUICK)}")
p.add_argument('--models', default=None, help='comma-separated timm names')
p.add_argument('--size', type=int, default=96, help='input size for models that take any size')
p.add_argument('--threads', type=int, default=2)
p.add_argument('--out', default=str(Path(__file__).parent/'ZOO.md'))
a = p.parse_args()
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
