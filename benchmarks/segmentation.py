"""Which layer of a fastai U-Net should Grad-CAM read? Measured on the segmentation variant of the synthetic shapes.

    python benchmarks/segmentation.py            # shapes_unet_learner (resnet18 U-Net, 300 images, 6 epochs; weights cached), all validation images
    python benchmarks/segmentation.py --quick    # 2 epochs on 60 images: only shows that the script works

Trains (or loads) `shapes_unet_learner`, computes Grad-CAM of each item's true class (and of `target=None`) at every candidate
layer of the `DynamicUnet`, scores the maps against the objects' masks with the pointing game and the energy pointing game, and
writes the table as the section '## Segmentation: the layer of a U-Net' of benchmarks/QUALITY.md (the rest of the file is kept;
`--quick` writes only to an explicit `--out`)."""
import os, re, time, argparse, platform, warnings
warnings.filterwarnings('ignore')
import numpy as np, torch
from fastai.vision.all import *
import fastai
from fast_cam.all import *
from fast_cam.metrics import pointing_game, energy_pointing_game
from fast_cam.data import shapes_unet_learner
from datetime import date

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, default=1)
p.add_argument('--bs', type=int, default=20, help='items per Grad-CAM batch')
p.add_argument('--n', type=int, default=None, help='validation images to score (default all)')
p.add_argument('--pred', action='store_true', help='also score the maps of `target=None` (twice the time)')
p.add_argument('--quick', action='store_true', help='a briefly trained model on a few images')
p.add_argument('--out', default=None, help='the markdown file to update (default benchmarks/QUALITY.md; none for --quick)')
a = p.parse_args()
torch.set_num_threads(a.threads)
out = a.out or (None if a.quick else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'QUALITY.md'))
TITLE = '## Segmentation: the layer of a U-Net'

t0 = time.perf_counter()
KW = dict(n=300, epochs=6, bs=16, lr=3e-3)  # the recipe of the measured model (its weights are cached in ~/.cache/fast_cam)
learn = shapes_unet_learner(n=60, epochs=2) if a.quick else shapes_unet_learner(cache=True, **KW)
t_fit = time.perf_counter()-t0
sh,m = learn.dls.shapes,learn.model
items = np.array(learn.dls.valid.items)[:a.n]
xb = to_batch(learn, list(sh.images[items]))
masks = torch.from_numpy(sh.masks[items])
codes = torch.from_numpy(sh.labels[items]+1)

# the segmentation itself: pixel accuracy, and IoU of each item's object class against its mask
with torch.no_grad(), ModelState(m): pred = torch.cat([m(xb[i:i+a.bs]) for i in range(0, len(xb), a.bs)]).argmax(1)
gt = torch.where(masks, codes[:,None,None], 0)
pix_acc = float((pred==gt).float().mean())
fg_acc = float((pred==gt)[masks].float().mean())
inter,union = ((pred==codes[:,None,None]) & masks).flatten(1).sum(1),((pred==codes[:,None,None]) | masks).flatten(1).sum(1)
obj_iou = float((inter/union.clamp_min(1)).float().mean())
print(f'{len(items)} validation images: pixel accuracy {pix_acc:.3f}, object pixels right {fg_acc:.3f}, IoU of the object class {obj_iou:.3f}')

L_ = m.layers
enc = L_[0]
cands = {'encoder, last stage (`layers.0.7`)': enc[-1], 'encoder, third stage (`layers.0.6`)': enc[-2], 'middle conv (`layers.3`)': L_[3]}
cands.update({f'UnetBlock {i-3} (`layers.{i}`)': L_[i] for i in range(4, 8)})
cands.update({'PixelShuffle_ICNR (`layers.8`)': L_[8], 'last ResBlock (`layers.11`)': L_[11], 'final conv, the logits (`layers.12`)': L_[12]})
auto = cam_layer(learn)
cands = {k + (' ← `unet_layer`' if o is unet_layer(m) else ''):o for k,o in cands.items()}

def maps_of(layer, target):
    res = []
    for i in range(0, len(xb), a.bs):
        t = target[i:i+a.bs] if isinstance(target, Tensor) else target
        res.append(learn.gradcam(xb[i:i+a.bs], target=t, layer=layer))
    return torch.cat(res)

# an all-zero map has no mass to place: it counts as 0 (rather than 0/0)
def energy(mp, mk): return float(energy_pointing_game(mp, mk).nan_to_num(0.).mean())
# the true class's score sums its logit over the pixels predicted as that class: items where it has none have nothing to explain
has = (pred==codes[:,None,None]).flatten(1).any(1)
print(f'{int(has.sum())} of {len(has)} items have pixels predicted as their true class')

rows = []
for k,o in cands.items():
    t = time.perf_counter()
    mp = maps_of(o, codes)
    dt = (time.perf_counter()-t)/len(xb)*1000
    mpn = maps_of(o, None) if a.pred else None
    empty = int((mp[has].flatten(1).amax(1)<=0).sum())
    rows.append(dict(layer=k, size=f"{mp.shape[-2]}×{mp.shape[-1]}", pointing=float(pointing_game(mp[has], masks[has]).mean()),
                     energy=energy(mp[has], masks[has]), pointing_pred=np.nan if mpn is None else float(pointing_game(mpn, masks).mean()),
                     energy_pred=np.nan if mpn is None else energy(mpn, masks), empty=empty, ms=dt))
    print(rows[-1])
unif = torch.ones(len(xb), 8, 8)
base = dict(pointing=float(pointing_game(unif[has], masks[has]).mean()), energy=energy(unif[has], masks[has]))
t_all = time.perf_counter()-t0

pc = ' pointing, `target=None` ↑ | energy, `target=None` ↑ |' if a.pred else ''
lines = [f'| layer | map | pointing ↑ | energy ↑ |{pc} all-zero maps | ms / image |', '|---'*(8 if a.pred else 6) + '|']
for r in rows:
    pv = f" {r['pointing_pred']:.3f} | {r['energy_pred']:.3f} |" if a.pred else ''
    lines.append(f"| {r['layer']} | {r['size']} | {r['pointing']:.3f} | {r['energy']:.3f} |{pv} {r['empty']} of {int(has.sum())} | {r['ms']:.0f} |")
lines.append(f"| uniform map (baseline) | | {base['pointing']:.3f} | {base['energy']:.3f} |{' | |' if a.pred else ''} | |")
table = '\n'.join(lines)
print(table)

sec = f"""{TITLE}

{date.today()} · {platform.machine()} · {a.threads} thread(s) · torch {torch.__version__} · fastai {fastai.__version__}. Written by `python benchmarks/segmentation.py` in {t_all:.0f} s{f' ({t_fit:.0f} s of training)' if t_fit>5 else ''}.

Model: `shapes_unet_learner({', '.join(f'{k}={v}' for k,v in KW.items())})`, a fastai `unet_learner(dls, resnet18, pretrained=False, n_out=5)` trained with one-cycle on the segmentation variant of `Shapes` ({KW['n']} images at 64 px, {KW['epochs']} epochs); on its {len(items)} validation images, pixel accuracy {pix_acc:.3f}, object pixels right {fg_acc:.3f}, IoU of the object's class with its mask {obj_iou:.3f}.

Grad-CAM of each item's true class (the class's logit summed over the pixels the model assigns to it, see `SegTarget`), at each candidate layer of the `DynamicUnet`, scored against the object's mask on the {int(has.sum())} items where the model assigns some pixels to the true class (on the others that score is 0 and every map is empty): `pointing` is the share of maps whose peak falls inside the mask (no tolerance), `energy` the share of the map's mass inside it{'; the `target=None` columns explain the most frequent non-background predicted class instead' if a.pred else ''}. An all-zero map (the class has no predicted pixel, or the ReLU removes everything) scores its pointing as a tie over the whole image and its energy as 0. The automatic layer of a `DynamicUnet` is `unet_layer(m)`.

{table}

The last `UnetBlock` is the first layer whose maps sit on the object. The layers after it score as high, but the final conv's map is the class's own logit map (the output explaining itself), and the last ResBlock works on the input image concatenated back by the `MergeLayer`, so its map partly follows the raw pixels. `unet_layer` therefore picks the last `UnetBlock`, a map at half the input's side. The encoder's stages and the middle conv, which a classifier's rule would pick, score at or below the uniform map. Times are per image on a shared, loaded 2-core machine.
"""
if out:
    txt = open(out).read() if os.path.exists(out) else '# Quality benchmark\n'
    # replace this section if it is there (up to the next '## ' heading), else append it
    pat = re.compile(re.escape(TITLE) + r'.*?(?=\n## |\Z)', re.S)
    txt = pat.sub(lambda _: sec.rstrip('\n'), txt) if pat.search(txt) else txt.rstrip('\n') + '\n\n' + sec
    open(out, 'w').write(txt.rstrip('\n') + '\n')
    print(f'wrote {out}')
