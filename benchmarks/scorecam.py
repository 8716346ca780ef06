"""Score-CAM: fast_cam (exact and `max_channels` modes) against torchcam and pytorch-grad-cam, on one trained model and the same images, in one run.

    python benchmarks/scorecam.py            # the shapes model of `fast_cam demo`, 50 validation images
    python benchmarks/scorecam.py --quick    # a tiny model, 3 images: only shows that the script works

Prints the median time per image of each, the speed-up of fast_cam over each peer, the agreement of the exact map with torchcam's,
and for each `max_channels` the Spearman rank correlation with the exact map. Writes benchmarks/SCORECAM.md."""
import os, sys, time, argparse, platform, copy, datetime, warnings
os.environ.setdefault('TQDM_DISABLE', '1')  # pytorch-grad-cam's per-image progress bars
warnings.filterwarnings('ignore')
import numpy as np, torch
from scipy.stats import spearmanr
import torchcam, torchcam.methods as tcm
import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from fast_cam.all import *
from fast_cam.data import shapes_learner

p = argparse.ArgumentParser()
p.add_argument('--quick', action='store_true'); p.add_argument('--n', type=int, default=50)
p.add_argument('--threads', type=int, default=2); p.add_argument('--bs', type=int, default=32)
p.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'SCORECAM.md'))
a = p.parse_args()
torch.set_num_threads(a.threads)
learn = shapes_learner(n=300, epochs=1) if a.quick else shapes_learner(cache=True)
n = 3 if a.quick else a.n
m = learn.model.eval()
layer = cam_layer(learn)
name = module_name(m, layer)
k_all = [o.out_channels for o in layer.modules() if isinstance(o, torch.nn.Conv2d)][-1]
ks = [k for k in (8, 16, 24, 32) if k < k_all]
modes = [(sel,fill) for sel in ('taylor','variance','gradcam') for fill in ('min','mean','zero')]
fast = [(sel,fill,k) for sel,fill in modes for k in ks]
items = learn.dls.valid.items[:n]
xs = [to_batch(learn, [learn.dls.shapes.images[i]]) for i in items]
with torch.no_grad(): tg = [int(m(x).argmax()) for x in xs]

def t_ours(x, t, k=None, sel='taylor', fill='min'):
    t0 = time.perf_counter(); r = explain(m, x, 'scorecam', target=t, bs=a.bs, max_channels=k, select=sel, fill=fill, bar=False)
    return time.perf_counter()-t0, r[0]
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

res = {'fast_cam exact':[], 'torchcam':[], 'pytorch-grad-cam':[], **{f:[] for f in fast}}
rho = {f:[] for f in fast}; agree = []
t_ours(xs[0], tg[0]); t_torchcam(xs[0], tg[0]); t_pgc(xs[0], tg[0])  # warm-up
for x,t in zip(xs, tg):  # interleaved, one image at a time
    dt,ex = t_ours(x, t); res['fast_cam exact'].append(dt)
    dt,tc = t_torchcam(x, t); res['torchcam'].append(dt)
    res['pytorch-grad-cam'].append(t_pgc(x, t))
    agree.append(((min_max_scale(ex[None])-min_max_scale(tc[None])).abs().max()).item())
    for f in fast:
        dt,fm = t_ours(x, t, f[2], f[0], f[1]); res[f].append(dt)
        rho[f].append(spearmanr(upsample(ex[None], 64).flatten(), upsample(fm[None], 64).flatten())[0] if ex.max()>0 else 1.)

med = {k:float(np.median(v)) for k,v in res.items()}
lines = [f"# Score-CAM benchmark\n",
         f"{datetime.date.today()} · {platform.processor() or platform.machine()} · torch {torch.__version__} · {torch.get_num_threads()} threads · "
         f"torchcam {torchcam.__version__} · grad-cam 1.5.7 · fast_cam {__import__('fast_cam').__version__}\n",
         f"Model: `shapes_cnn` trained on `Shapes` ({'quick: 300 images, 1 epoch' if a.quick else '3,000 images, 7 epochs'}), layer `{name}` ({k_all} channels), "
         f"{n} validation images of 64 px, one at a time, batch size {a.bs} for the masked forwards of all three libraries.\n",
         f"Exact map vs torchcam's (both min-max scaled): max abs difference {max(agree):.2e}.\n",
         "| method | median s / image | vs torchcam | vs pytorch-grad-cam | Spearman vs exact (median, min) |", "|---|---|---|---|---|"]
for k,v in med.items():
    name_ = f"fast_cam max_channels={k[2]}, select='{k[0]}', fill='{k[1]}'" if isinstance(k, tuple) else k
    sp = f"{np.median(rho[k]):.3f}, {np.min(rho[k]):.3f}" if isinstance(k, tuple) else ('1 (reference)' if k=='fast_cam exact' else '')
    ours_ = isinstance(k, tuple) or k.startswith('fast_cam')
    vs = f"{med['torchcam']/v:.2f}×" if ours_ else ''
    vp = f"{med['pytorch-grad-cam']/v:.2f}×" if ours_ else ''
    lines.append(f"| {name_} | {v:.4f} | {vs} | {vp} | {sp} |")
txt = '\n'.join(lines)
print(txt)
if not a.quick: open(a.out, 'w').write(txt+'\n')
