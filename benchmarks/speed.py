"""Speed and peak memory: fast_cam against pytorch-grad-cam, torchcam and captum, on the same model and input, in one run.

    python benchmarks/speed.py             # the full table, written to benchmarks/RESULTS.md (about 25 minutes on 2 cores, training included)
    python benchmarks/speed.py --quick     # tiny inputs, 1 repetition: only shows that the script works
    python benchmarks/speed.py --only scorecam   # one case: its section of RESULTS.md is replaced, the rest kept

Every method is timed against a reference that does the least work the method could possibly do: a no-grad forward for the
CAM family, one forward plus one backward to the input for guided backprop. The timings of fast_cam, each peer and the
reference are interleaved (one repetition of each in turn), so a slow moment of the machine hits them all alike; we report
the median and the min–max of the repetitions. Peak memory is measured in a fresh subprocess per measurement: the increase
of the process's peak RSS (`VmHWM`) during one call, over the RSS before it, compared with the same for the reference.
Timings are never asserted in tests; the ratios of one run are the figure."""
import os, sys, time, json, argparse, platform, datetime, subprocess, copy, warnings, gc
os.environ.setdefault('TQDM_DISABLE', '1')  # pytorch-grad-cam's progress bars
warnings.filterwarnings('ignore')
import numpy as np, torch, torch.nn as nn, torchvision
from pathlib import Path

HERE = Path(__file__).parent
p = argparse.ArgumentParser()
p.add_argument('--quick', action='store_true', help='tiny inputs and 1 repetition, to check that the script runs')
p.add_argument('--reps', type=int, default=7, help='timed repetitions per measurement (after one warm-up)')
p.add_argument('--threads', type=int, default=2)
p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
p.add_argument('--only', default='', help='comma-separated case names to run (default: all)')
p.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
p.add_argument('--out', default=str(HERE/'RESULTS.md'))
p.add_argument('--mem', nargs=2, metavar=('CASE','LIB'), help=argparse.SUPPRESS)  # worker mode: one memory measurement
a = p.parse_args()
torch.set_num_threads(a.threads)
dev = torch.device(a.device)

from fastai.vision.all import Learner, vision_learner, resnet18, set_seed, Flatten
import captum, torchcam, torchcam.methods as tcm
import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from captum.attr import LayerGradCam, GuidedBackprop as CaptumGB
import fast_cam, fast_cam.metrics
from fast_cam.all import *
from fast_cam.data import Shapes

# ---- models and inputs ---------------------------------------------------------------------------------------------
def fastai_resnet(arch, n_out=1000):
    "A torchvision resnet cut the fastai way: `Sequential(body, head)` with the CAM-exact head GAP → Flatten → Linear"
    body = nn.Sequential(*list(arch(weights=None).children())[:-2])
    return nn.Sequential(body, nn.Sequential(nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(512, n_out)))

def shapes_resnet():
    "resnet18 (no pretrained weights) trained on the synthetic Shapes set, so its channels are realistic; cached"
    size,n,epochs = (64,64,0) if a.quick else (128,8000,5)  # 1,600 images overfit a resnet18 (val acc 0.44-0.68); 8,000 reach > 0.99
    set_seed(0, reproducible=True)
    dls = Shapes(n, size=size, seed=0).dls(bs=32 if a.quick else 64)
    learn = vision_learner(dls, resnet18, pretrained=False, concat_pool=False, lin_ftrs=[])
    f = Path(os.environ.get('FAST_CAM_CACHE', '~/.cache/fast_cam')).expanduser()/f'speed_resnet18_shapes_{n}_{size}_{epochs}.pth'
    if f.exists(): learn.model.load_state_dict(torch.load(f, map_location='cpu'))
    elif epochs:
        print(f'training resnet18 on Shapes({n}, size={size}) for {epochs} epochs (cached in {f})', file=sys.stderr)
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 2e-3)
        f.parent.mkdir(parents=True, exist_ok=True); torch.save(learn.model.state_dict(), f)
    return learn

_cache,ACC = {},{}
def setup(case):
    "Model (eval, on `dev`), input batch and target classes of a case"
    if case in _cache: return _cache[case]
    g = torch.Generator().manual_seed(0)
    if case in ('cam','gradcam','gradcampp','layercam'):
        m = fastai_resnet(torchvision.models.resnet34)
        x = torch.randn(2 if a.quick else 16, 3, *((64,64) if a.quick else (224,224)), generator=g)
    elif case=='guided_backprop':
        m = fastai_resnet(torchvision.models.resnet18)
        x = torch.randn(2 if a.quick else 8, 3, *((64,64) if a.quick else (224,224)), generator=g)
    else:  # scorecam and the top-losses grid: the trained model, real validation images
        learn = shapes_resnet()
        m = learn.model
        with learn.no_bar():
            preds,targs = learn.get_preds()
            ACC[case] = float((preds.argmax(1)==targs).float().mean())
            interp = CAMInterpretation.from_learner(learn)
            if case=='toplosses':
                _,idx = interp.top_losses(3 if a.quick else 9)
                inps,preds,targs,_,_ = interp[idx]
                xb = inps[0] if isinstance(inps, (tuple,list)) else inps
                pred,targ = preds.argmax(1),targs
                wrong = (pred!=targ).nonzero()[:,0]
                # the batch the grid's CAM step explains: the k items for their predicted class, the mistakes for their actual class
                x,t = torch.cat([xb, xb[wrong]]).as_subclass(torch.Tensor), torch.cat([pred, targ[wrong]]).as_subclass(torch.Tensor)
            else:
                items = learn.dls.valid.items[:max(a.reps,1)+1]
                x = to_batch(learn, [learn.dls.shapes.images[i] for i in items]).as_subclass(torch.Tensor)  # one image per repetition
    m = m.eval().to(dev); x = x.to(dev)
    if case!='toplosses':
        with torch.no_grad(): t = m(x if case!='scorecam' else x[:1]).argmax(1)
        if case=='scorecam': t = None  # per image, below
    _cache[case] = (m, x, t)
    return _cache[case]

def layer_of(m): return m[0][-1]   # the body's last block, fast_cam's layer='last'
def layer_name(m): return f'0.{len(m[0])-1}'

# ---- the callables: each returns a function of the repetition number that computes the maps ----------------------------
def _sc_input(x, r): return x[r % len(x)][None]
def _sc_target(m, x, r):
    with torch.no_grad(): return int(m(_sc_input(x, r)).argmax())

def make(case, lib, k=None):
    "A function `f(rep)` computing `case`'s maps with `lib` on the case's model copy and input"
    m,x,t = setup(case)
    tl = t.tolist() if t is not None else None
    if lib=='reference':
        if case=='guided_backprop':
            def f(r):
                xi = x.detach().requires_grad_()
                out = m(xi)
                return torch.autograd.grad(out.gather(1, t[:,None]).sum(), xi)[0]
            return f
        def f(r):
            with torch.no_grad(): return m(_sc_input(x, r) if case=='scorecam' else x)
        return f
    if lib=='fast_cam':
        if case=='scorecam':
            return lambda r: explain(m, _sc_input(x, r), 'scorecam', target=_sc_target(m, x, r), layer='last', bs=32, max_channels=k, bar=False)
        meth = {'guided_backprop':'guided_backprop', 'toplosses':'gradcam'}.get(case, case)
        # the peers' layer: the body's last block (fast_cam's default is finer below 224 px)
        return lambda r: explain(m, x, meth, target=t, layer=None if case=='guided_backprop' else 'last')
    mm = copy.deepcopy(m)  # peers get their own copy: their hooks stay on it while they live
    lay,name = layer_of(mm),layer_name(mm)
    if lib=='pytorch-grad-cam':
        if case=='guided_backprop':
            gb = pgc.GuidedBackpropReLUModel(mm, device=dev)
            # pytorch-grad-cam explains the first item of a batch only: one call per image
            return lambda r: [gb(x[i:i+1], target_category=tl[i]) for i in range(len(x))]
        cls = dict(gradcam=pgc.GradCAM, toplosses=pgc.GradCAM, gradcampp=pgc.GradCAMPlusPlus, layercam=pgc.LayerCAM, scorecam=pgc.ScoreCAM)[case]
        cam = cls(model=mm, target_layers=[lay])
        if case=='scorecam':
            cam.batch_size = 32
            return lambda r: cam(input_tensor=_sc_input(x, r), targets=[ClassifierOutputTarget(_sc_target(mm, x, r))])
        return lambda r: cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in tl])
    if lib=='torchcam':
        cls = dict(cam=tcm.CAM, gradcam=tcm.GradCAM, toplosses=tcm.GradCAM, gradcampp=tcm.GradCAMpp, layercam=tcm.LayerCAM, scorecam=tcm.ScoreCAM)[case]
        kw = dict(fc_layer=mm[1][-1]) if case=='cam' else dict(batch_size=32) if case=='scorecam' else {}
        ext = cls(mm, target_layer=name, input_shape=tuple(x.shape[1:]), **kw)
        if case=='scorecam':
            def f(r):
                xi = _sc_input(x, r)
                with torch.no_grad(): out = mm(xi)
                return ext(class_idx=int(out.argmax()), scores=out, normalized=False)
            return f
        if case=='cam':
            def f(r):
                with torch.no_grad(): out = mm(x)
                return ext(class_idx=tl, scores=out, normalized=False)
            return f
        def f(r):
            out = mm(x)
            return ext(class_idx=tl, scores=out, normalized=False)
        return f
    if lib=='captum':
        if case=='guided_backprop':
            gb = CaptumGB(mm)
            return lambda r: gb.attribute(x, target=t)
        gc_ = LayerGradCam(mm, lay)
        return lambda r: gc_.attribute(x, target=t, relu_attributions=True)
    raise ValueError(lib)

PEERS = {'cam': ['torchcam'], 'gradcam': ['pytorch-grad-cam','torchcam','captum'], 'gradcampp': ['pytorch-grad-cam','torchcam'],
         'layercam': ['pytorch-grad-cam','torchcam'], 'guided_backprop': ['pytorch-grad-cam','captum'],
         'scorecam': ['pytorch-grad-cam','torchcam'], 'toplosses': ['pytorch-grad-cam','torchcam','captum']}
CASES = {'cam': 'CAM (resnet34, batch 16, 224 px)', 'gradcam': 'Grad-CAM (resnet34, batch 16, 224 px)',
         'gradcampp': 'Grad-CAM++ (resnet34, batch 16, 224 px)', 'layercam': 'LayerCAM (resnet34, batch 16, 224 px)',
         'guided_backprop': 'Guided backprop (resnet18, batch 8, 224 px)',
         'scorecam': 'Score-CAM (resnet18 trained on Shapes, batch 1, 128 px)',
         'toplosses': "Top-losses grid's Grad-CAM step (k = 9, resnet18 trained on Shapes, 128 px)"}
if a.quick:
    for c in list(CASES): CASES[c] = CASES[c].replace('batch 16','batch 2').replace('batch 8','batch 2').replace('224 px','64 px').replace('128 px','64 px').replace('k = 9','k = 3').replace('trained on','untrained, on')
K = (8,) if a.quick else (16, 32, 64)   # Score-CAM `max_channels`

def sync():
    if dev.type=='cuda': torch.cuda.synchronize()

# ---- memory worker -----------------------------------------------------------------------------------------------------
def _status(key):
    for l in open('/proc/self/status'):
        if l.startswith(key): return int(l.split()[1])/1024  # MiB

def mem_worker(case, lib):
    k = None
    if lib.startswith('fast_cam:'): lib,k = 'fast_cam',int(lib.split(':')[1])
    f = make(case, lib, k)
    gc.collect()
    if dev.type=='cuda':
        sync(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()/2**20
        f(0); sync(); print(json.dumps({'peak': torch.cuda.max_memory_allocated()/2**20 - base})); return
    with open('/proc/self/clear_refs', 'w') as o: o.write('5')  # reset the peak RSS to the current RSS
    base = _status('VmRSS:')
    f(0)
    print(json.dumps({'peak': _status('VmHWM:') - base}))

if a.mem:
    mem_worker(*a.mem); sys.exit()

def mem(case, lib):
    cmd = [sys.executable, __file__, '--mem', case, lib, '--threads', str(a.threads), '--device', a.device] + (['--quick'] if a.quick else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: print(r.stderr[-3000:], file=sys.stderr); return float('nan')
    return json.loads(r.stdout.strip().splitlines()[-1])['peak']

# ---- timing ------------------------------------------------------------------------------------------------------------
def timeit(f, r):
    sync(); t0 = time.perf_counter(); f(r); sync(); return time.perf_counter()-t0

def spearman(u, v): return float(fast_cam.metrics.spearman(u, v)[0])  # ties (the zeros after the ReLU) share their average rank

def run_case(case):
    libs = ['reference','fast_cam'] + PEERS[case]
    keys = libs + ([f'fast_cam:{k}' for k in K] if case=='scorecam' else [])
    fs = {key: make(case, *(('fast_cam', int(key.split(':')[1])) if ':' in key else (key,))) for key in keys}
    reps = 1 if a.quick else a.reps
    for key in keys: fs[key](0)  # warm-up
    ts = {key: [] for key in keys}
    for r in range(reps):
        for key in keys: ts[key].append(timeit(fs[key], r))
    res = {key: dict(med=float(np.median(v)), lo=float(np.min(v)), hi=float(np.max(v))) for key,v in ts.items()}
    if case=='scorecam':  # fidelity of the fast mode: rank correlation with the exact map, one image per repetition
        m,x,_ = setup(case)
        exact = [fs['fast_cam'](r)[0] for r in range(reps)]  # the exact map of each repetition's image, once
        for k in K:
            rho = []
            for r in range(reps):
                ex,fm = exact[r],fs[f'fast_cam:{k}'](r)[0]
                rho.append(spearman(upsample(ex[None], x.shape[-2:]), upsample(fm[None], x.shape[-2:])) if ex.max()>0 else 1.)
            res[f'fast_cam:{k}']['rho'] = (float(np.median(rho)), float(np.min(rho)))
        tc = make(case, 'torchcam')(0)[0][0]
        res['fast_cam']['agree'] = float((min_max_scale(fs['fast_cam'](0)[0][None].cpu())-min_max_scale(tc[None].cpu())).abs().max())
    if not a.no_memory and (not a.quick or case=='gradcam'):  # --quick: one case, to show the measurement works
        for key in (keys if not a.quick else ['reference','fast_cam']): res[key]['mem'] = mem(case, key)
    return res

def label(key):
    if key=='reference': return 'reference'
    if key.startswith('fast_cam:'): return f"fast_cam max_channels={key.split(':')[1]}"
    return key

def table(case, res):
    ref = res['reference']
    peers = PEERS[case]
    rows = [f"### {CASES[case]}\n"] + ([f"Validation accuracy of the trained model: {ACC[case]:.3f}.\n"] if case in ACC else []) + [
            f"Reference: {'one forward and one backward to the input' if case=='guided_backprop' else 'a no-grad forward'} of the same batch"
            + (', per image' if case=='scorecam' else '') + '.\n',
            '| | median s | min–max s | × reference | ' + ' | '.join(f'speed-up over {p}' for p in peers) + ' | peak memory MiB | × reference memory |',
            '|---' * (6+len(peers)) + '|']
    for key,v in res.items():
        ours = key.startswith('fast_cam')
        su = ' | '.join((f"{res[p]['med']/v['med']:.2f}×" if ours else '') for p in peers)
        mm = v.get('mem', float('nan')); rm = ref.get('mem', float('nan'))
        rmem = f"{mm/rm:.2f}×" if rm>=1 else '–'
        extra = f" (Spearman with exact: median {v['rho'][0]:.3f}, min {v['rho'][1]:.3f})" if 'rho' in v else ''
        rows.append(f"| {label(key)}{extra} | {v['med']:.4f} | {v['lo']:.4f}–{v['hi']:.4f} | {v['med']/ref['med']:.2f}× | {su} | "
                    f"{mm:.0f} | {rmem} |" if mm==mm else
                    f"| {label(key)}{extra} | {v['med']:.4f} | {v['lo']:.4f}–{v['hi']:.4f} | {v['med']/ref['med']:.2f}× | {su} | – | – |")
    if 'agree' in res['fast_cam']: rows.append(f"\nExact Score-CAM vs torchcam's (both min-max scaled): max abs difference {res['fast_cam']['agree']:.1e}.")
    return '\n'.join(rows)

def main():
    cases = [c for c in CASES if not a.only or c in a.only.split(',')]
    dname = torch.cuda.get_device_name() if dev.type=='cuda' else (platform.processor() or platform.machine())
    head = [f"# fast_cam speed benchmark{' (quick: tiny inputs, not a result)' if a.quick else ''}\n",
            f"{datetime.date.today()} · {dname} · {os.cpu_count()} CPUs · torch {torch.__version__} · {torch.get_num_threads()} threads · "
            f"fast_cam {fast_cam.__version__} · pytorch-grad-cam 1.5.7 · torchcam {torchcam.__version__} · captum {captum.__version__}\n",
            f"{1 if a.quick else a.reps} timed repetitions after a warm-up, interleaved; median and min–max. Peak memory: increase of "
            + ('`torch.cuda.max_memory_allocated`' if dev.type=='cuda' else 'peak RSS') + " during one call, in a fresh process.\n"]
    print('\n'.join(head), flush=True)
    out = list(head)  # a copy: the sections run are those after the header
    for c in cases:
        t = table(c, run_case(c))
        print(t+'\n', flush=True); out.append(t+'\n')
    if a.quick: return
    if a.only and Path(a.out).exists(): merge(Path(a.out), out[len(head):])
    else: Path(a.out).write_text('\n'.join(out))

def merge(path, new):
    "Replace the sections (`### title`) of the cases run with `--only` in an existing RESULTS.md; the others stay as they were"
    old = path.read_text().split('\n### ')
    note = f"Run alone on {datetime.date.today()} (`--only`), {torch.get_num_threads()} threads.\n\n"
    for t in new:
        title = t.split('\n')[0][4:]
        body = t[4:].replace('\n\n', '\n\n'+note, 1)
        i = next((i for i,o in enumerate(old) if o.split('\n')[0]==title), None)
        if i is None: old.append(body)
        else: old[i] = body + ('\n' if old[i].endswith('\n') else '')
    path.write_text('\n### '.join(old))

if __name__=='__main__': main()
