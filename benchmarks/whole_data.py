"""Whole data sets: `learn.get_cams` against `learn.get_preds` on the same DataLoader, peak memory when the maps stream to disk,
and one process against two (`torchrun`, gloo on CPU).

    python benchmarks/whole_data.py            # writes its section of benchmarks/RESULTS.md (about 4 minutes on 2 cores)
    python benchmarks/whole_data.py --quick    # small sizes, printed only

The rest of RESULTS.md is kept: only the part between the `whole-data` markers is replaced (or appended).
"""
import os, sys, time, json, argparse, platform, re, subprocess, tempfile, warnings
from pathlib import Path
import numpy as np, torch
warnings.filterwarnings('ignore')
from fastai.vision.all import *
import fast_cam
from fast_cam.all import *
from fast_cam.data import Shapes
from datetime import date

HERE = Path(__file__).parent
BEGIN,END = '<!-- whole-data: benchmarks/whole_data.py -->','<!-- /whole-data -->'
p = argparse.ArgumentParser()
p.add_argument('--quick', action='store_true')
p.add_argument('--threads', type=int, default=2)
p.add_argument('--reps', type=int, default=7)
p.add_argument('--sizes', default='1000,10000', help='data set sizes for the memory table')
p.add_argument('--out', default=str(HERE/'RESULTS.md'))
a = p.parse_args()
if a.quick: a.reps = 1
torch.set_num_threads(a.threads)

def learner(arch, size, n=1200, seed=0):
    "`vision_learner(dls, arch, pretrained=False)` on `Shapes(n)` at `size` px (untrained: timing and memory only)"
    set_seed(seed, reproducible=True)
    dls = Shapes(n, size=size, seed=seed).dls(bs=64)
    return vision_learner(dls, arch, pretrained=False)

def write_folder(d, n, size=64):
    "`n` Shapes images as PNG files: the data set lives on disk, not in the process"
    d.mkdir(parents=True, exist_ok=True)
    sh = Shapes(n, size=size, seed=1)
    for i in range(n): PILImage.create(sh.images[i]).save(d/f'{i:05d}.png')
    return d

# ---- 1. get_cams / get_preds

def ratio_table():
    models = [('resnet34', resnet34, 64), ('resnet18', resnet18, 128), ('densenet121', densenet121, 64)]
    if a.quick: models = models[:1]
    out = []
    for name,arch,size in models:
        learn = learner(arch, size, n=300 if a.quick else 1200)
        dl = learn.dls.valid.new(shuffle=False, drop_last=False)
        last = module_name(learn, resolve_layer(learn, 'last', dl.one_batch()[0]))
        auto = module_name(learn, resolve_layer(learn, None, dl.one_batch()[0]))
        cases = {'get_preds': lambda: learn.get_preds(dl=dl),
                 f"get_cams gradcam, layer='last' ({last})": lambda: learn.get_cams(dl, layer='last'),
                 f'get_cams gradcam, automatic layer ({auto})': lambda: learn.get_cams(dl),
                 "get_cams layercam, layer='last'": lambda: learn.get_cams(dl, method='layercam', layer='last'),
                 "get_cams gradcampp, layer='last'": lambda: learn.get_cams(dl, method='gradcampp', layer='last'),
                 "get_preds, then explain per batch (two forwards)": lambda: (learn.get_preds(dl=dl), [learn.gradcam(b[0], layer='last') for b in dl])}
        ts = {k:[] for k in cases}
        with learn.no_bar():
            for f in cases.values(): f()  # warm-up
            for r in range(a.reps):  # interleaved: a slow moment of the shared machine hits every case alike
                for k,f in cases.items(): t = time.perf_counter(); f(); ts[k].append(time.perf_counter()-t)
        med = {k:float(np.median(v)) for k,v in ts.items()}
        rows = [f"| {k} | {med[k]:.3f} | {min(v):.3f}–{max(v):.3f} | {med[k]/med['get_preds']:.2f}× |" for k,v in ts.items()]
        out.append(f"#### {name}, {size} px, {dl.n} validation images, batch {dl.bs}\n\n| | median s | min–max s | × get_preds |\n|---|---|---|---|\n"
                   + '\n'.join(rows) + '\n')
        print(out[-1], flush=True)
    return '\n'.join(out)

# ---- 2. peak memory when the maps stream to disk; 3. one process against two

CHILD = '''
import os, sys, time, json, warnings, torch
warnings.filterwarnings('ignore')
from pathlib import Path
from fastai.vision.all import *
from fast_cam.all import *
learner,folder,out,threads = sys.argv[1],Path(sys.argv[2]),Path(sys.argv[3]),int(sys.argv[4])
torch.set_num_threads(threads)
# this process's own resident memory: ru_maxrss would carry the launching process's peak across exec
mib = lambda k: int([l for l in open('/proc/self/status') if l.startswith(k)][0].split()[1])/1024
learn = load_learner(learner, cpu=True)
dl = learn.dls.test_dl(get_image_files(folder).sorted(), bs=64)
with learn.no_bar(): learn.get_cams(dl.new(n=64), out=out/'warm', with_preds=False)  # first call: lazy imports and allocations
base = mib('VmRSS:')
with open('/proc/self/clear_refs', 'w') as f: f.write('5')  # the peak (VmHWM) starts again from the current size
t = time.perf_counter()
with learn.no_bar(): man = learn.get_cams(dl, out=out/'maps', with_preds=False)
dt = time.perf_counter()-t
if int(os.environ.get('RANK', 0))==0: print(json.dumps(dict(n=len(man), base=base, peak=mib('VmHWM:'), seconds=dt)))
'''

def child(args, nproc=1, threads=2):
    env = {**os.environ, 'OMP_NUM_THREADS':str(threads)}
    f = Path(tempfile.mkdtemp())/'child.py'; f.write_text(CHILD)
    cmd = [sys.executable, str(f), *args, str(threads)]
    if nproc>1: cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc), *cmd[1:]]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode: raise SystemExit(r.stderr[-3000:])
    res = json.loads([l for l in r.stdout.splitlines() if l.startswith('{')][-1])
    res['wall'] = time.perf_counter()-t
    return res

def memory_and_processes():
    tmp = Path(tempfile.mkdtemp())
    learn = learner(resnet34, 64, n=300)
    learn.export(tmp/'learner.pkl')
    sizes = [int(o) for o in a.sizes.split(',')]
    if a.quick: sizes = [100, 200]
    mem = []
    for n in sizes:
        folder = write_folder(tmp/f'imgs{n}', n)
        r = child([str(tmp/'learner.pkl'), str(folder), str(tmp/f'o{n}')])
        files = len(list((tmp/f'o{n}'/'maps').glob('*.npy')))
        mem.append(f"| {n:,} | {r['base']:.0f} | {r['peak']:.0f} | {r['peak']-r['base']:+.0f} | {r['seconds']:.1f} | {files:,} |")
        print(mem[-1], flush=True)
    n = sizes[0]
    procs = {}
    for label,(nproc,threads) in {'1 process × 2 threads':(1,2), '2 processes × 1 thread (torchrun)':(2,1)}.items():
        procs[label] = child([str(tmp/'learner.pkl'), str(tmp/f'imgs{n}'), str(tmp/f'p{nproc}')], nproc, threads)
        print(label, procs[label], flush=True)
    ref = procs['1 process × 2 threads']
    prow = [f"| {k} | {v['seconds']:.1f} | {v['seconds']/ref['seconds']:.2f}× | {v['wall']:.1f} |" for k,v in procs.items()]
    return ("#### Peak memory, maps streamed to disk (`get_cams(dl, out=..., with_preds=False)`)\n\n"
            "resnet34 at 64 px, a folder of PNG files through `dls.test_dl`, batch 64, in a fresh process per size. Resident memory (VmRSS) after "
            "a warm-up call, and its peak during the run (VmHWM, reset just before the call).\n\n| images | MiB before | MiB peak during the call | growth | s | .npy files |\n|---|---|---|---|---|---|\n" + '\n'.join(mem) + '\n\n'
            f"#### One process against two (CPU, gloo)\n\n{n:,} images, as above. `get_cams` time in the process (rank 0, merge of the manifest "
            "included) and the whole launch (start-up and model loading included). The machine has 2 cores, so two processes can only "
            "trade threads for processes.\n\n| | get_cams s | × 1 process | launch s |\n|---|---|---|---|\n" + '\n'.join(prow) + '\n')

def main():
    head = (f"### Whole data sets: `get_cams`\n\n{date.today()} · {platform.machine()} · torch {torch.__version__} · {a.threads} threads · "
            f"fast_cam {fast_cam.__version__} · {a.reps} timed repetitions after a warm-up, interleaved; median and min–max. "
            "Untrained models (`pretrained=False`): the cost does not depend on the weights.\n\n"
            "`get_cams` computes each batch's maps inside fastai's inference loop, and the method's forward is the batch's forward, so it "
            "costs one forward plus the backward from the output to the layer. Target: at most 1.10× `get_preds` for the gradient methods. That backward is short at the last stage (`layer='last'`). The automatic layer sits earlier at small inputs (`layer2` of a resnet at 64 px, where the last stage is 2×2), so its backward runs through the later stages: that is the price of a map that localises (`benchmarks/QUALITY.md`), and it is the same price a single `learn.gradcam` call pays.\n\n")
    sec = head + ratio_table() + '\n' + memory_and_processes()
    sec += "\nNo GPU was lent to this run: no CUDA table.\n"
    print(sec)
    if a.quick: return
    out = Path(a.out)
    txt = out.read_text() if out.exists() else ''
    block = f"{BEGIN}\n{sec}{END}\n"
    if BEGIN in txt and END in txt: txt = re.sub(re.escape(BEGIN)+'.*?'+re.escape(END)+r'\n?', lambda _: block, txt, flags=re.S)
    else: txt = txt.rstrip('\n') + '\n\n' + block
    out.write_text(txt)
    print(f'wrote {out}')

if __name__=='__main__': main()
