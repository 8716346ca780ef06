"""Every method of fast_cam against its peer's implementation, on the same model and input, in one run: time and peak memory.

    python benchmarks/methods.py                  # 224 px inputs, 5 repetitions; writes benchmarks/METHODS.md
    python benchmarks/methods.py --quick          # 64 px, 1 image, 1 call, no memory: only shows that it runs
    python benchmarks/methods.py --only ablationcam,fullgrad

The cases come from `benchmarks/peers/*.py` (one file per fast_cam module, each a list `CASES` of `peers.Case`). For each
case, fast_cam's method, the peer's and fast_cam's Grad-CAM on the same layer are timed in turn, one repetition of each,
so that a slow moment of the machine hits all three alike; we report medians and their ratios. Peak memory is measured
in a fresh subprocess per call: the rise of the peak RSS (`VmHWM`) during one call (`torch.cuda.max_memory_allocated`
on a GPU). Timings are never asserted in tests; the ratios of one run are the figure."""
import os, sys, time, json, argparse, platform, datetime, subprocess, importlib, pkgutil, copy, warnings, gc
os.environ.setdefault('TQDM_DISABLE', '1')
warnings.filterwarnings('ignore')
import numpy as np, torch, torchvision
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
p = argparse.ArgumentParser()
p.add_argument('--quick', action='store_true', help='64 px, 1 image and 1 repetition, to check that the script runs')
p.add_argument('--reps', type=int, default=5)
p.add_argument('--size', type=int, default=224)
p.add_argument('--threads', type=int, default=2)
p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
p.add_argument('--only', default='', help='comma-separated case names (default: all)')
p.add_argument('--no-memory', action='store_true')
p.add_argument('--out', default=None, help='where to write the table (default benchmarks/METHODS.md; none for --quick)')
p.add_argument('--mem', nargs=2, metavar=('CASE','LIB'), help=argparse.SUPPRESS)  # worker mode
a = p.parse_args()
torch.set_num_threads(a.threads)
dev = torch.device(a.device)
if a.quick: a.reps,a.size,a.no_memory = 1,64,True

from fast_cam.all import *
import peers
CASES = {c.name:c for _,mod,_ in pkgutil.iter_modules(peers.__path__) for c in importlib.import_module(f'peers.{mod}').CASES}
if a.only: CASES = {k:CASES[k] for k in a.only.split(',')}

def setup(c):
    "The case's model (eval, on `dev`, seeded) and input, and the predicted classes"
    torch.manual_seed(0)
    kw = {'image_size': a.size} if c.model.startswith('vit_') else {}  # torchvision's ViTs are built for one size
    video = c.model.startswith('video.')  # torchvision's video networks: clips of 8 frames
    lib = torchvision.models.video if video else torchvision.models
    m = getattr(lib, c.model.removeprefix('video.'))(weights=None, **kw).eval().to(dev)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1 if a.quick else c.n, 3, *([8] if video else []), a.size, a.size, generator=g).to(dev)
    with torch.no_grad(): t = m(x).argmax(1).tolist()
    return m,x,t

def make(c, lib):
    m,x,t = setup(c)
    if lib=='fast_cam': return lambda: explain(m, x, c.method, target=t, layer=c.layer, **c.kwargs)
    if lib=='gradcam': return lambda: explain(m, x, 'gradcam', target=t, layer=c.layer or 'last')
    return c.make_peer(copy.deepcopy(m), c.layer, x, t)

def sync():
    if dev.type=='cuda': torch.cuda.synchronize()

def _status(key):
    for l in open('/proc/self/status'):
        if l.startswith(key): return int(l.split()[1])/1024  # MiB

def mem_worker(name, lib):
    f = make(CASES[name], lib); gc.collect()
    if dev.type=='cuda':
        sync(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()/2**20
        f(); sync(); print(json.dumps({'peak': torch.cuda.max_memory_allocated()/2**20 - base})); return
    with open('/proc/self/clear_refs', 'w') as o: o.write('5')  # the peak RSS back to the current RSS
    base = _status('VmRSS:'); f()
    print(json.dumps({'peak': _status('VmHWM:') - base}))

if a.mem: mem_worker(*a.mem); sys.exit()

def peak(name, lib):
    cmd = [sys.executable, __file__, '--mem', name, lib, '--size', str(a.size), '--threads', str(a.threads), '--device', a.device]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try: return json.loads(r.stdout.strip().splitlines()[-1])['peak']
    except Exception: return float('nan')

def timeit(fs, reps, warm=True):
    "Median seconds of each callable in `fs`, interleaved, after one warm-up call each (`warm`)"
    if warm:
        for f in fs.values(): f(); sync()
    ts = {k:[] for k in fs}
    for _ in range(reps):
        for k,f in fs.items():
            sync(); t0 = time.perf_counter(); f(); sync(); ts[k].append(time.perf_counter()-t0)
    return {k:float(np.median(v)) for k,v in ts.items()}

rows = []
for name,c in CASES.items():
    fs = {lib:make(c, lib) for lib in ('fast_cam', 'peer', 'gradcam')}
    t = timeit(fs, a.reps, warm=not a.quick)  # --quick: one call each, no warm-up
    mem = {} if a.no_memory else {lib:peak(name, lib) for lib in ('fast_cam','peer')}
    rows.append(dict(name=name, peer=c.peer, model=c.model, n=1 if a.quick else c.n, ours=t['fast_cam'], theirs=t['peer'],
                     ratio=t['fast_cam']/t['peer'], vs_gradcam=t['fast_cam']/t['gradcam'], gradient=c.gradient,
                     mem_ratio=(mem['fast_cam']/mem['peer'] if mem and mem['peer']>0 else float('nan')),
                     mem_ours=mem.get('fast_cam', float('nan')), mem_theirs=mem.get('peer', float('nan'))))
    r = rows[-1]
    print(f"{name:22s} {c.peer:17s} ours {r['ours']*1e3:9.1f} ms  peer {r['theirs']*1e3:9.1f} ms  "
          f"ratio {r['ratio']:5.2f}x  vs Grad-CAM {r['vs_gradcam']:6.2f}x  memory ratio {r['mem_ratio']:.2f}", flush=True)

out = a.out or (None if a.quick else HERE/'METHODS.md')
if out:
    fmt = lambda v, d=2: '' if v!=v else f'{v:.{d}f}'
    lines = [f"# Every method against its peer ({datetime.date.today()}, {platform.processor() or platform.machine()}, "
             f"{a.device}, torch {torch.__version__}, {a.threads} threads, {a.size} px, median of {a.reps})", '',
             "`python benchmarks/methods.py`. Ratio = fast_cam's time / the peer's (below 1: fast_cam is faster); "
             "vs Grad-CAM = fast_cam's time / fast_cam's Grad-CAM on the same layer and input; memory = the ratio of the "
             "peak-RSS rises of one call.", '',
             '| method | peer | model | images | fast_cam ms | peer ms | time ratio | vs Grad-CAM | memory ratio |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['name']} | {r['peer']} | {r['model']} | {r['n']} | {fmt(r['ours']*1e3,1)} | {fmt(r['theirs']*1e3,1)} "
                     f"| {fmt(r['ratio'])} | {fmt(r['vs_gradcam'])} | {fmt(r['mem_ratio'])} |")
    Path(out).write_text('\n'.join(lines)+'\n')
    print(f'wrote {out}')
