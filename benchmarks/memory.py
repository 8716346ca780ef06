"""Process memory over many consecutive calls: a leak (a hook left on, a graph kept alive, a cache that grows) shows as RSS growth.

    python benchmarks/memory.py [--calls 1000] [--out benchmarks/MEMORY.md]

For each method family, 1,000 calls of `learn.heatmap` on image files (the whole path: `dls.test_dl`, the capture, the method),
after a warm-up of 50 calls; the figure is the resident set size (VmRSS) after the calls minus after the warm-up."""
import os, sys, gc, time, argparse, warnings, tempfile
warnings.filterwarnings('ignore')
import torch
from pathlib import Path
from fastai.vision.all import PILImage
from fast_cam.all import *
from fast_cam.data import shapes_learner

def rss_mib():
    "This process's resident set size, from the kernel"
    for l in Path('/proc/self/status').read_text().splitlines():
        if l.startswith('VmRSS:'): return int(l.split()[1])/1024
    raise RuntimeError('no VmRSS in /proc/self/status')

FAMILIES = {  # a family: methods that share a code path
    'cam (exact, no gradient)':            dict(method='cam'),
    'gradient rules (Grad-CAM)':           dict(method='gradcam'),
    'gradient rules (Grad-CAM++, all)':    dict(method='gradcampp', target='all'),
    'Eigen-CAM (SVD)':                     dict(method='eigencam'),
    'Score-CAM (masked forwards)':         dict(method='scorecam', max_channels=8, bar=False),
    'guided backprop (input gradients)':   dict(method='guided_backprop'),
    'guided Grad-CAM':                     dict(method='guided_gradcam'),
    'multi-layer fusion (LayerCAM)':       dict(method='layercam', layer=[[0,1],[0,2]]),
}

def run(calls=1000, warmup=50):
    torch.set_num_threads(min(2, os.cpu_count()))
    learn = shapes_learner(n=200, epochs=0, seed=0)
    sh = learn.dls.shapes
    d = Path(tempfile.mkdtemp())
    files = [d/f'{i}.png' for i in range(2)]
    for i,f in enumerate(files): PILImage.create(sh.images[i]).save(f)
    rows = []
    for name,kw in FAMILIES.items():
        kw = dict(kw)
        f = lambda: learn.heatmap(files, **kw)
        for _ in range(warmup): f()
        gc.collect(); r0 = rss_mib(); t = time.perf_counter()
        for _ in range(calls): f()
        gc.collect(); r1 = rss_mib()
        rows.append((name, calls, r0, r1, r1-r0, time.perf_counter()-t))
        print(f"{name:<38} {calls} calls: {r0:7.1f} -> {r1:7.1f} MiB ({r1-r0:+.1f} MiB) in {rows[-1][-1]:.0f}s", flush=True)
    return rows

if __name__=='__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--calls', type=int, default=1000)
    p.add_argument('--out', default=None)
    a = p.parse_args()
    rows = run(a.calls)
    worst = max(r[4] for r in rows)
    md = ["# Memory over consecutive calls", "",
          f"`python benchmarks/memory.py --calls {a.calls}`: `learn.heatmap` on two image files with `shapes_cnn` at 64 px, "
          "{a.calls} calls per family after 50 warm-up calls, resident set size (VmRSS) before and after. Target: growth ≤ 20 MiB.".format(a=a), "",
          "| family | calls | RSS after warm-up (MiB) | RSS after the calls (MiB) | growth (MiB) |", "|---|---|---|---|---|"]
    md += [f"| {n} | {c} | {r0:.1f} | {r1:.1f} | {g:+.1f} |" for n,c,r0,r1,g,_ in rows]
    md += ["", f"Largest growth: {worst:+.1f} MiB ({'within' if worst<=20 else 'OVER'} the 20 MiB target)."]
    if a.out: Path(a.out).write_text('\n'.join(md)+'\n')
    print('\n'.join(md))
    sys.exit(0 if worst<=20 else 1)
