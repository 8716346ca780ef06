"""Score-CAM: fast_cam's exact and fast modes against torchcam and pytorch-grad-cam, and the fast mode's frontier on several models.

    python benchmarks/scorecam.py            # 24 items per model; trains (and caches) the models it lacks
    python benchmarks/scorecam.py --quick    # a tiny model, 3 images: only shows that the script works

Part 1, on the shapes model of `fast_cam demo` (64 px, 128 channels): median time per image of fast_cam's exact Score-CAM,
torchcam's and pytorch-grad-cam's (same batch size for the masked forwards), and the agreement of the exact maps.
Part 2, the fast mode (`max_channels=k`) on the last stage of fastai's xresnet18 and torchvision's resnet18 (512 channels)
at 64, 96 and 128 px, and on the shapes model: for each rule and k, the wall-clock speed-up over the exact mode (one image
at a time, both timed in the same run), the median relative L2 error of the map to the exact one (at the layer's
resolution, where the maps are computed), the share of items whose map peaks at the same place, and the median Spearman
rank correlation. Trained weights are cached in ~/.cache/fast_cam (or $FAST_CAM_CACHE), shared with benchmarks/shortcuts.py
and benchmarks/quality.py. Writes benchmarks/SCORECAM.md."""
import os, sys, time, argparse, platform, copy, warnings
os.environ.setdefault('TQDM_DISABLE', '1')  # pytorch-grad-cam's per-image progress bars
warnings.filterwarnings('ignore')
import numpy as np, torch
from scipy.stats import spearmanr
import torchcam, torchcam.methods as tcm
import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from fastai.vision.all import *
from fast_cam.all import *
from fast_cam.data import Shapes, shapes_learner, fit_cached
import datetime, copy  # after fastai, whose star import brings the class `datetime` and a function `copy`

p = argparse.ArgumentParser()
p.add_argument('--quick', action='store_true'); p.add_argument('--n', type=int, default=24)
p.add_argument('--threads', type=int, default=2); p.add_argument('--bs', type=int, default=32)
p.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'SCORECAM.md'))
a = p.parse_args()
torch.set_num_threads(a.threads)
n = 3 if a.quick else a.n
RULES = [('taylor','gp'), ('taylor','min'), ('variance','mean')]  # the default; the flat fill; "Faster Score-CAM"
KS = (8, 16) if a.quick else (16, 32, 48)

def learners():
    "(name, learner, input size, layer) of each model: the shapes model, and the 512-channel last stage of two resnets"
    if a.quick: yield 'shapes_cnn (quick)', shapes_learner(n=300, epochs=1), 64, None; return
    yield 'shapes_cnn', shapes_learner(cache=True), 64, None  # the automatic layer
    set_seed(0, reproducible=True)  # the clean xresnet18 of benchmarks/shortcuts.py, seed 0 (2,000 images, 6 epochs)
    xr = fit_cached(Learner(Shapes(2000, seed=0).dls(bs=64), xresnet18(n_out=4), metrics=accuracy),
                    'shortcut_xresnet18_2000_6_0.01_0_clean', 6, 1e-2, cache=True)
    for s in (64, 96, 128): yield 'xresnet18', xr, s, '7'  # the last stage
    set_seed(0, reproducible=True)  # the resnet18 of benchmarks/quality.py (3,000 images, 5 epochs)
    rn = vision_learner(Shapes(3000, seed=0).dls(bs=64), resnet18, pretrained=False, concat_pool=False, lin_ftrs=[], metrics=accuracy)
    rn = fit_cached(rn, 'quality_resnet18_3000_5_0.003_0', 5, 3e-3, cache=True)
    for s in (96, 128): yield 'resnet18', rn, s, '0.7'

def timed(f, *args, **kw):
    t0 = time.perf_counter(); r = f(*args, **kw); return time.perf_counter()-t0, r
def ours(m, x, t, layer, **kw): return explain(m, x, 'scorecam', target=t, layer=layer, bs=a.bs, bar=False, **kw)[0]
def rel_l2(f, e): return float((f-e).norm()/e.norm().clamp_min(1e-12))
def same_peak(f, e): return float(f.flatten().argmax()==e.flatten().argmax())

def peers(learn):
    "Part 1: the exact map, one image at a time, against torchcam and pytorch-grad-cam"
    m = learn.model.eval(); layer = cam_layer(learn); name = module_name(m, layer)
    xs = [to_batch(learn, [learn.dls.shapes.images[i]]) for i in learn.dls.valid.items[:n]]
    with torch.no_grad(): tg = [int(m(x).argmax()) for x in xs]
    def t_torchcam(x, t):
        mm = copy.deepcopy(m); t0 = time.perf_counter()
        with tcm.ScoreCAM(mm, target_layer=name, batch_size=a.bs, input_shape=tuple(x.shape[1:])) as ext:
            with torch.no_grad(): out = mm(x)
            r = ext(class_idx=t, scores=out, normalized=False)[0][0]
        return time.perf_counter()-t0, r
    def t_pgc(x, t):
        mm = copy.deepcopy(m); cam = pgc.ScoreCAM(model=mm, target_layers=[mm.get_submodule(name)]); cam.batch_size = a.bs
        t0 = time.perf_counter(); cam(input_tensor=x, targets=[ClassifierOutputTarget(t)]); dt = time.perf_counter()-t0
        cam.activations_and_grads.release(); return dt
    ours(m, xs[0], tg[0], layer); t_torchcam(xs[0], tg[0]); t_pgc(xs[0], tg[0])  # warm-up
    res,agree = {'fast_cam exact':[], 'torchcam':[], 'pytorch-grad-cam':[]},[]
    for x,t in zip(xs, tg):  # interleaved
        dt,ex = timed(ours, m, x, t, layer); res['fast_cam exact'].append(dt)
        dt,tc = t_torchcam(x, t); res['torchcam'].append(dt)
        res['pytorch-grad-cam'].append(t_pgc(x, t))
        agree.append(((min_max_scale(ex[None])-min_max_scale(tc[None])).abs().max()).item())
    med = {k:float(np.median(v)) for k,v in res.items()}
    k_all = [o.out_channels for o in layer.modules() if isinstance(o, torch.nn.Conv2d)][-1]
    lines = [f"## Exact Score-CAM against the peers\n",
             f"Model: `shapes_cnn` on `Shapes`, layer `{name}` ({k_all} channels), {n} validation images of 64 px, one at a time, "
             f"batch size {a.bs} for the masked forwards of all three libraries.\n",
             f"Exact map vs torchcam's (both min-max scaled): max abs difference {max(agree):.2e}.\n",
             "| method | median s / image | fast_cam is faster by |", "|---|---|---|"]
    ex = med['fast_cam exact']
    for k,v in med.items(): lines.append(f"| {k} | {v:.4f} | {'' if k=='fast_cam exact' else f'{v/ex:.2f}×'} |")
    return lines

def frontier(label, learn, size, name):
    "Part 2: every fast rule and k against the exact map, on `n` items at `size` px"
    m = learn.model.eval()
    ev = Shapes(max(n, 40), size=size, seed=1)
    xs = [to_batch(learn, [ev.images[i]]) for i in range(n)]
    with torch.no_grad(): out = torch.cat([m(x) for x in xs])
    tg = out.argmax(1).tolist(); acc = float((out.argmax(1)==torch.tensor(ev.labels[:n])).float().mean())
    layer = cam_layer(learn) if name is None else m.get_submodule(name)
    k_all = capture(m, xs[0], [layer], grad=False).acts[0].shape[1]
    ours(m, xs[0], tg[0], layer, max_channels=KS[0])  # warm-up
    rows = {}
    t_ex,exs = [],[]
    for x,t in zip(xs, tg):
        dt,e = timed(ours, m, x, t, layer); t_ex.append(dt); exs.append(e)
    for sel,fill in RULES:
        for k in KS:
            ts,err,pk,rho = [],[],[],[]
            for x,t,e in zip(xs, tg, exs):
                dt,f = timed(ours, m, x, t, layer, max_channels=k, select=sel, fill=fill); ts.append(dt)
                err.append(rel_l2(f, e)); pk.append(same_peak(f, e))
                rho.append(spearmanr(e.flatten(), f.flatten())[0] if e.max()>0 and f.std()>0 else 1.)
            rows[(sel,fill,k)] = (np.median(t_ex)/np.median(ts), np.median(err), np.mean(pk), np.nanmedian(rho))
    hw = 'x'.join(map(str, exs[0].shape))
    head = f"### {label}, {size} px: layer `{module_name(m, layer)}`, {k_all} channels at {hw}; accuracy on these items {acc:.2f}; exact {np.median(t_ex):.3f} s / image\n"
    lines = [head, "| rule | k | speed-up over exact | median rel. L2 | same peak | Spearman |", "|---|---|---|---|---|---|"]
    for (sel,fill,k),(sp,e,pk,r) in rows.items():
        lines.append(f"| fast_cam max_channels={k}, select='{sel}', fill='{fill}' | {k} | {sp:.1f}× | {e:.3f} | {pk:.2f} | {r:.3f} |")
    return lines,rows

lines = [f"# Score-CAM benchmark\n",
         f"{datetime.date.today()} · {platform.processor() or platform.machine()} · torch {torch.__version__} · {torch.get_num_threads()} threads · "
         f"torchcam {torchcam.__version__} · grad-cam 1.5.7 · fast_cam {__import__('fast_cam').__version__}\n"]
first = True
summary = []
for label,learn,size,name in learners():
    if first: lines += peers(learn) + ['', "## The fast mode against the exact one\n",
        f"{n} items of `Shapes(size=S, seed=1)` (not seen in training), target = predicted class, one image at a time. "
        "k = `max_channels`, the masked forwards per item (plus one for the zero mask of the constant channels); "
        "the error, peak and rank correlation are against the exact map, at the layer's resolution.\n"]; first = False
    ls,rows = frontier(label, learn, size, name); lines += ls + ['']
    summary.append((label, size, rows))
lines += ["## Summary: the default (`select='taylor', fill='gp'`) against the flat fill, k = 32\n" if not a.quick else "## Summary\n",
          "| model | px | speed-up | rel. L2 (gp) | same peak (gp) | rel. L2 (min) | same peak (min) |", "|---|---|---|---|---|---|---|"]
k = 32 if not a.quick else KS[-1]
for label,size,rows in summary:
    g,f = rows[('taylor','gp',k)],rows[('taylor','min',k)]
    lines.append(f"| {label} | {size} | {g[0]:.1f}× | {g[1]:.3f} | {g[2]:.2f} | {f[1]:.3f} | {f[2]:.2f} |")
txt = '\n'.join(lines)
print(txt)
if not a.quick: open(a.out, 'w').write(txt+'\n')
