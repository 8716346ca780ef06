"""Shortcut detection on a planted shortcut: detection rate and false alarms of `find_shortcuts`, over seeds and models.

For each model and seed, a `Shapes` set whose *training* items of one class all carry a small mark in one corner (the
class and corner change with the seed). The model trained on it is checked on validation items that carry the mark at
random (half of them, any class): `find_shortcuts` should flag that class at that corner. The same model trained on the
same images without any mark is the control: anything flagged there is a false alarm. Trained weights are cached in
~/.cache/fast_cam (or $FAST_CAM_CACHE). Writes benchmarks/SHORTCUTS.md.

    OMP_NUM_THREADS=1 python benchmarks/shortcuts.py [--seeds 0 1 2] [--archs shapes_cnn xresnet18 resnet18] [--quick]
"""
import argparse, time, warnings
from pathlib import Path
from fastai.vision.all import *
from fast_cam.all import *
warnings.filterwarnings('ignore')

vocab,corners = ['circle','cross','square','triangle'],['top-left','top-right','bottom-left','bottom-right']
# images, epochs and learning rate per model: enough that the control (no mark) learns the shapes, so its maps mean
# something (torchvision's resnet18 from random weights stays near chance at 1e-2, 0.3-0.4 after 5-10 epochs; at 2e-3 it
# learns them)
archs = {'shapes_cnn': dict(n=3000, epochs=7, lr=1e-2), 'xresnet18': dict(n=2000, epochs=6, lr=1e-2),
         'resnet18': dict(n=3000, epochs=10, lr=2e-3)}
default_archs = ['shapes_cnn', 'xresnet18', 'resnet18']

def learner(arch, sh, seed, name):
    cfg = archs[arch]
    set_seed(seed, reproducible=True)
    dls = sh.dls(bs=64)
    if arch=='shapes_cnn': learn = Learner(dls, shapes_cnn(len(vocab)), metrics=accuracy)
    elif arch=='xresnet18': learn = Learner(dls, xresnet18(n_out=len(vocab)), metrics=accuracy)
    else: learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    return fit_cached(learn, name, cfg['epochs'], cfg['lr'], cache=True)

def acc(learn, sh, cls=None):
    "Validation accuracy of `learn` on `sh` (on the items of class `cls` only: its recall)"
    with learn.no_bar(): p,t = learn.get_preds(dl=sh.dls().valid)
    ok = p.argmax(1)==t
    return float(ok[t==vocab.index(cls)].float().mean() if cls else ok.float().mean())

def run(arch, seed):
    cfg,mark,at = archs[arch],vocab[seed%4],corners[seed%4]
    n,key = cfg['n'],f"{arch}_{cfg['n']}_{cfg['epochs']}_{cfg['lr']}_{seed}"
    t = time.perf_counter()
    planted = learner(arch, Shapes(n, seed=seed, mark=mark, mark_at=at), seed, f'shortcut_{key}_{mark}_{at}')
    clean = learner(arch, Shapes(n, seed=seed), seed, f'shortcut_{key}_clean')
    t_train = time.perf_counter()-t
    same,none = (Shapes(n, seed=seed, mark=mark, mark_at=at, mark_valid=v) for v in ('same','none'))
    r = dict(arch=arch, seed=seed, mark=mark, corner=at, acc_with=acc(planted, same), acc_without=acc(planted, none),
             recall_with=acc(planted, same, mark), recall_without=acc(planted, none, mark), acc_clean=acc(clean, none))
    t = time.perf_counter()
    for masks,tag in ((None,'masks'), (False,'no masks')):
        with planted.no_bar(): s = find_shortcuts(planted, masks=masks)
        with clean.no_bar(): c = find_shortcuts(clean, masks=masks)
        hit = [f for f in s if f.cls==mark and f.region==f'{at} corner']
        r[tag] = dict(found=bool(hit), kinds=sorted({f.kind for f in hit}), other=len(s.findings)-len(hit),
                      other_what=[f"{f.cls} {f.kind} {f.region}" for f in s if f not in hit],
                      clean=len(c.findings), clean_what=[f"{f.cls} {f.kind} {f.region}" for f in c])
    r['t_train'],r['t_find'] = t_train,(time.perf_counter()-t)/4
    return r

def table(rs):
    lines = ["| model | seed | mark | acc. with mark | acc. without | recall with | recall without | clean acc. "
             "| found (masks) | other findings | clean findings | found (no masks) | other | clean |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rs:
        m,o = r['masks'],r['no masks']
        lines.append(f"| {r['arch']} | {r['seed']} | {r['mark']}, {r['corner']} | {r['acc_with']:.2f} | "
                     f"{r['acc_without']:.2f} | {r['recall_with']:.2f} | {r['recall_without']:.2f} | {r['acc_clean']:.2f} | "
                     f"{'yes: '+', '.join(m['kinds']) if m['found'] else 'no'} | {m['other']} | {m['clean']} | "
                     f"{'yes: '+', '.join(o['kinds']) if o['found'] else 'no'} | {o['other']} | {o['clean']} |")
    return '\n'.join(lines)

def summary(rs):
    "Per model: detection, false alarms (findings on the clean models) and other findings, with and without masks"
    out = []
    for arch in dict.fromkeys(r['arch'] for r in rs):
        ar = [r for r in rs if r['arch']==arch]
        accs = [r['acc_clean'] for r in ar]
        for tag in ('masks','no masks'):
            out.append(f"- {arch} (clean accuracy {min(accs):.2f}–{max(accs):.2f}), {tag}: planted shortcut found in "
                       f"**{sum(r[tag]['found'] for r in ar)}/{len(ar)}** runs; false alarms: "
                       f"**{sum(r[tag]['clean'] for r in ar)}** findings on the {len(ar)} clean models "
                       f"({sum(r[tag]['clean']>0 for r in ar)} models with any); "
                       f"{sum(r[tag]['other'] for r in ar)} other findings on the planted models.")
    return '\n'.join(out)

if __name__=='__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, nargs='+', default=[0,1,2])
    ap.add_argument('--archs', nargs='+', default=default_archs, choices=list(archs))
    ap.add_argument('--out', default=str(Path(__file__).parent/'SHORTCUTS.md'))
    ap.add_argument('--quick', action='store_true', help='one seed, the small CNN on 600 images; writes nothing')
    ap.add_argument('--n', type=int, help='images per data set, instead of each model\'s own')
    ap.add_argument('--epochs', type=int, help='epochs, instead of each model\'s own')
    a = ap.parse_args()
    for v in archs.values(): v.update({k:getattr(a, k) for k in ('n','epochs') if getattr(a, k)})
    if a.quick: archs,a.seeds,a.archs = {'shapes_cnn': dict(n=600, epochs=4, lr=1e-2)},[0],['shapes_cnn']
    rs = []
    for arch in a.archs:
        for seed in a.seeds:
            rs.append(run(arch, seed))
            r = rs[-1]
            print(f"{arch} seed {seed}: acc {r['acc_with']:.2f} with the mark, {r['acc_without']:.2f} without; "
                  f"found {r['masks']['found']}/{r['no masks']['found']}, clean findings "
                  f"{r['masks']['clean_what']} / {r['no masks']['clean_what']} "
                  f"(train {r['t_train']:.0f}s, find {r['t_find']:.1f}s)", flush=True)
    def _what(k): return [f"{r['arch']} seed {r['seed']} ({tag}): {w}" for r in rs for tag in ('masks','no masks')
                          for w in r[tag][k]]
    clean,other = _what('clean_what'),_what('other_what')
    md = f"""# Shortcut detection on a planted shortcut

`python benchmarks/shortcuts.py` (CPU, {time.strftime('%Y-%m-%d')}). Each run: a `Shapes` set (64 px) whose training
items of one class (the *mark* column) all carry a 6-pixel mark in one corner; the model trained on it; its validation
set carries the mark on a random half of the items, whatever their class. `find_shortcuts` (Grad-CAM, defaults:
`alpha=0.01`, `min_share=0.25`) should flag that class at that corner. The control is the same model trained on the
same images without the mark: anything it flags is a false alarm. "acc. with / without": the planted model's
validation accuracy with the mark as in training (on that class only) and with no mark; "recall": that class's.
Models: {', '.join(f"{k} ({v['n']} images, {v['epochs']} epochs, lr {v['lr']:g})" for k,v in archs.items() if k in a.archs)},
all from random weights. "masks": the objects' masks known (all four checks); "no masks": without them (no
`outside_object`).

{summary(rs)}

{table(rs)}

Clean-model findings (false alarms): {'; '.join(clean) if clean else 'none'}.

Other findings on the planted models (not the planted class and corner): {'; '.join(other) if other else 'none'}.
"""
    if not a.quick: Path(a.out).write_text(md)
    print(md)
