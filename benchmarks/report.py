"""The report over a large set: the size of `learn.cam_report`'s HTML file and the time to write and to render it.

    python benchmarks/report.py            # 1,000 Shapes images (about a minute on 2 cores), printed
    python benchmarks/report.py --quick    # 200 images

The model is the `Shapes` CNN (`shapes_learner(cache=True)`); the images are a fresh `Shapes` set (seed 1), with their
masks for the pointing games. Rendering is timed in headless Chromium (`--dump-dom`, which returns once the page and
every image in it have loaded), less the time Chromium takes on an empty page.
"""
import os, sys, time, argparse, shutil, subprocess, tempfile, re, warnings
from pathlib import Path
import torch
warnings.filterwarnings('ignore')
from fastai.vision.all import *
from fast_cam.all import *
from fast_cam.data import Shapes

p = argparse.ArgumentParser()
p.add_argument('--quick', action='store_true')
p.add_argument('--n', type=int, default=1000, help='images in the report')
p.add_argument('--threads', type=int, default=2)
p.add_argument('--reps', type=int, default=3, help='Chromium renders timed (the median is printed)')
a = p.parse_args()
if a.quick: a.n,a.reps = 200,1
torch.set_num_threads(a.threads)

def render_s(f, reps):
    "Median wall times of headless Chromium loading `f` with every image, and an empty page; None without Chromium"
    exe = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if exe is None: return None
    empty = f.with_name('empty.html'); empty.write_text('<!DOCTYPE html><title>e</title>')
    def _t(g):
        t = time.perf_counter()
        r = subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--window-size=1280,2400', '--dump-dom',
                            g.as_uri()], capture_output=True, text=True, timeout=300)
        assert '</html>' in r.stdout, r.stderr[-1000:]
        return time.perf_counter()-t
    med = lambda g: sorted(_t(g) for _ in range(reps))[reps//2]
    return med(f),med(empty)

learn = shapes_learner(cache=True)
sh = Shapes(a.n, seed=1)
dl = learn.dls.test_dl(list(sh.images), bs=64)
labels = [sh.vocab[i] for i in sh.labels]
d = Path(tempfile.mkdtemp())
f = d/'report.html'
t = time.perf_counter()
with learn.no_bar(): learn.cam_report(f, dl=dl, labels=labels, masks=torch.from_numpy(sh.masks))
write = time.perf_counter()-t
s = f.read_text(encoding='utf-8')
n_img = s.count('<img ')
t = time.perf_counter()
with learn.no_bar(): learn.get_cams(dl)
cams = time.perf_counter()-t
t = time.perf_counter()
with learn.no_bar(): learn.cam_report(d/'r0.html', dl=dl, labels=labels, masks=torch.from_numpy(sh.masks), n_trust=0,
                                      n_sanity=0)
bare = time.perf_counter()-t
rnd = render_s(f, a.reps)
print(f"| images in the data set | {a.n:,} |")
sz = f.stat().st_size
print(f"| report file | {sz/1e3:,.0f} kB, {n_img} thumbnails ({sz/max(n_img,1)/1e3:.1f} kB each) |")
print(f"| time to write it (`cam_report`, {a.threads} threads) | {write:.1f} s; without the trust table "
      f"(`n_trust=0, n_sanity=0`) {bare:.1f} s; the `get_cams` pass alone {cams:.1f} s |")
print(f"| time to render it (headless Chromium, all images loaded) | "
      + ('no Chromium here |' if rnd is None else
         f"{rnd[0]:.2f} s, an empty page {rnd[1]:.2f} s (Chromium's start; median of {a.reps}) |"))
shutil.rmtree(d)
