"""Which layer localises at small inputs? resnet18 and resnet34 (`vision_learner`, no pretrained weights) trained on `Shapes`
at 64 and 128 px; every stage of the body and fast_cam's default scored by pointing game, deletion AUC, the randomisation
sanity check and class sensitivity.

    python benchmarks/small_inputs.py            # trains (cached in ~/.cache/fast_cam) and writes a section of benchmarks/QUALITY.md
    python benchmarks/small_inputs.py --quick    # resnet18 at 64 px, tiny data, one epoch: only shows the script works (writes nothing)
"""
import os, sys, time, argparse, warnings, re
warnings.filterwarnings('ignore')
import numpy as np, torch
from fastai.vision.all import *
from fast_cam.all import *
from fast_cam.metrics import *
from fast_cam.data import Shapes

p = argparse.ArgumentParser()
p.add_argument('--n', type=int, default=200, help='validation images to score')
p.add_argument('--sanity-n', type=int, default=24, help='images for the randomisation check')
p.add_argument('--steps', type=int, default=16, help='deletion steps')
p.add_argument('--threads', type=int, default=2)
p.add_argument('--quick', action='store_true')
p.add_argument('--train-only', action='store_true')
p.add_argument('--cached', action='store_true', help='score only the models whose weights are already cached')
a = p.parse_args()
if a.quick: a.n,a.sanity_n,a.steps = 32,8,4
torch.set_num_threads(a.threads)

ARCHS = dict(resnet18=resnet18) if a.quick else dict(resnet18=resnet18, resnet34=resnet34)
SIZES = (64,) if a.quick else (64, 128)
# (arch, size): (images, epochs); the four models train in about 25 minutes on 2 quiet CPU cores, and score in 6
RECIPE = {('resnet18',64):(8000,5), ('resnet34',64):(8000,5), ('resnet18',128):(6000,5), ('resnet34',128):(5000,5)}

def weights_file(arch, size, lr=2e-3, bs=64):
    n,epochs = (400,1) if a.quick else RECIPE[arch,size]
    return Path(os.environ.get('FAST_CAM_CACHE', '~/.cache/fast_cam')).expanduser()/f'small_{arch}_{n}_{size}_{epochs}_{lr}_{bs}.pth'

def trained(arch, size, lr=2e-3, bs=64):
    "`vision_learner(dls, arch, pretrained=False)` with fastai's default head, trained on Shapes at `size` px; weights cached"
    n,epochs = (400,1) if a.quick else RECIPE[arch,size]
    set_seed(0, reproducible=True)
    dls = Shapes(n, size=size, seed=0).dls(bs=bs)
    learn = vision_learner(dls, ARCHS[arch], pretrained=False, metrics=accuracy)
    f = weights_file(arch, size, lr, bs)
    if f.exists(): learn.model.load_state_dict(torch.load(f, map_location='cpu'))
    else:
        t = time.perf_counter()
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr)
        f.parent.mkdir(parents=True, exist_ok=True); torch.save(learn.model.state_dict(), f)
        print(f'trained {arch} at {size} px on {n} images in {time.perf_counter()-t:.0f} s', file=sys.stderr)
    learn.model.eval()
    return learn


STAGES = {'layer1':[0,4], 'layer2':[0,5], 'layer3':[0,6], 'layer4':[0,7]}

def gradcam_maps(learn, xb, layer, target=None, bs=50):
    "Grad-CAM of `xb` in batches"
    return torch.cat([learn.gradcam(xb[i:i+bs], target=None if target is None else target[i:i+bs], layer=layer) for i in range(0, len(xb), bs)])

def evaluate(arch, size, layers):
    "Per layer: map size, pointing game, energy, deletion AUC, class sensitivity and the randomisation check"
    learn = trained(arch, size)
    with learn.no_bar(): acc = float(learn.validate()[1])
    sh,items = learn.dls.shapes,np.array(learn.dls.valid.items[:a.n])
    xb,mk = to_batch(learn, list(sh.images[items])),torch.from_numpy(sh.masks[items])
    with torch.inference_mode(): out = learn.model.eval()(xb)
    idx,idx2 = out.argmax(1),out.argsort(1, descending=True)[:,1]
    rows,done = {},{}
    for name,lay in layers.items():
        mod = module_name(learn, resolve_layer(learn, lay, xb))
        if mod in done: rows[name] = done[mod]; continue  # 'last' and the default are also stages: scored once
        maps = gradcam_maps(learn, xb, lay, idx)
        other = gradcam_maps(learn, xb, lay, idx2)
        san = learn.cam_sanity_check(xb[:a.sanity_n], 'gradcam', layer=lay)
        rows[name] = done[mod] = dict(layer=mod, map='×'.join(map(str, maps.shape[-2:])),
                          pointing=pointing_game(maps, mk, 15/224*size).mean().item(),
                          energy=energy_pointing_game(maps, mk).nanmean().item(),
                          deletion=deletion(learn, xb, maps, target=idx, steps=a.steps, bs=128)[0].mean().item(),
                          other_class=spearman(upsample(maps, size), upsample(other, size)).nanmean().item(),
                          sanity=float(san.df.spearman.iloc[-1]))
        print(arch, size, name, {k:(round(v,3) if isinstance(v,float) else v) for k,v in rows[name].items()}, flush=True)
    return acc, rows

def figure(learns, fn, k=4):
    "For each trained model: `k` validation images with the last stage's map and the default map"
    rows = len(learns)
    axs = get_grid(rows*2*k, nrows=rows, ncols=2*k, figsize=(2*k*1.6, rows*1.9))
    for r,((arch,size),learn) in enumerate(learns.items()):
        sh,items = learn.dls.shapes,learn.dls.valid.items[:k]
        for j,i in enumerate(items):
            for c,lay in enumerate(('last', None)):
                ax = axs[r*2*k + 2*j + c]
                learn.show_gradcam(sh.images[i], layer=lay, ax=ax)
                ax.set_title(f"{arch} {size}px\n{'last stage' if lay else 'default'}", fontsize=7)
    plt.savefig(fn, dpi=90, bbox_inches='tight'); plt.close('all')

def section(res, t):
    "The markdown section of QUALITY.md"
    lines = [f"## Small inputs: which layer localises",
             "",
             f"`vision_learner(dls, arch, pretrained=False)` (fastai's default head) trained from scratch on `Shapes` with one-cycle at lr 2e-3, then Grad-CAM of the predicted class at each stage of the body and at fast_cam's default layer (`layer=None`), on the first {a.n} validation images. "
             f"`pointing`: the map's peak within 15/224 of the side of the object's mask; `energy`: share of the map's mass inside the mask (maps that are all zero left out); `deletion`: RISE deletion AUC of the softmax probability over {a.steps} steps (lower is better); "
             f"`other class`: Spearman correlation between the maps of the first and the second most probable class (lower: the map depends more on the class asked for); "
             f"`sanity`: Spearman correlation with the trained model's map after every block is re-initialised ({a.sanity_n} images; below 0.5 passes). Written by `python benchmarks/small_inputs.py` in {t:.0f} s.",
             ""]
    for (arch,size),(acc,rows) in res.items():
        n,ep = RECIPE[arch,size]
        lines += [f"**{arch}, {size} px** ({n} images, {ep} epochs; validation accuracy {acc:.3f})", "",
                  "| layer | module | map | pointing ↑ | energy ↑ | deletion ↓ | other class ↓ | sanity ↓ |", "|---|---|---|---|---|---|---|---|"]
        for k,r in rows.items():
            b = '**' if k=='default' else ''
            lines.append(f"| {b}{k}{b} | `{r['layer']}` | {r['map']} | {r['pointing']:.3f} | {r['energy']:.3f} | {r['deletion']:.3f} | {r['other_class']:.3f} | {r['sanity']:.3f} |")
        lines.append("")
    d = {k:v for k,v in res.items()}
    chk = []
    for (arch,size),(acc,rows) in d.items():
        dfl,last = rows['default'],rows['last']
        ok = dfl['pointing']>=.8 and dfl['pointing']>=last['pointing'] and dfl['deletion']<=last['deletion'] and dfl['sanity']<.5
        chk.append(f"- {arch} {size} px: pointing {dfl['pointing']:.3f} (last stage {last['pointing']:.3f}), deletion {dfl['deletion']:.3f} (last {last['deletion']:.3f}), "
                   f"sanity {dfl['sanity']:.3f}, other class {dfl['other_class']:.3f}: {'**met**' if ok else '**not met**'}")
    lines += ["Targets for the default map (pointing ≥ 0.8 and never below the last stage's, deletion AUC no worse than the last stage's, sanity < 0.5):", ""] + chk + [""]
    lines += ["The default is `cam_layer`'s rule: the last stage whose map is at least 7 cells a side (`layer2` at 64 px, `layer3` at 128 px, "
              "`layer4`, the literature's layer, from about 200 px). `layer='last'` keeps the classic map.", ""]
    lines += ["![The last stage's map and the default map on four validation images per model](../nbs/images/small_inputs.png)", ""]
    return "\n".join(lines)

if __name__=='__main__':
    t0,res,learns = time.perf_counter(),{},{}
    for size in SIZES:
        for arch in ARCHS:
            if a.cached and not weights_file(arch, size).exists(): print(f'{arch} {size} px: no cached weights, skipped'); continue
            learn = trained(arch, size)
            if a.train_only: continue
            res[arch,size] = evaluate(arch, size, {**STAGES, 'last':'last', 'default':None})
            learns[arch,size] = learn
    if not a.train_only and not a.quick:
        root = Path(__file__).parent.parent
        figure({k:v for k,v in learns.items() if k[0]=='resnet18'}, root/'nbs/images/small_inputs.png')
        txt = section(res, time.perf_counter()-t0)
        q = root/'benchmarks/QUALITY.md'
        old = re.sub(r'\n## Small inputs: which layer localises\n.*?(?=\n## |\Z)', '', q.read_text(), flags=re.S)  # this section only
        q.write_text(old.rstrip()+'\n\n'+txt)
        print(txt)
