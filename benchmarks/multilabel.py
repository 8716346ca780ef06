"""Every class at once: `target='all'` (one forward, the C backward passes batched) against one class, and against a loop over the classes.

    python benchmarks/multilabel.py            # resnet18, densenet121, convnext_tiny; writes its section of benchmarks/RESULTS.md
    python benchmarks/multilabel.py --quick    # a tiny model, printed only

The rest of RESULTS.md is kept: only the part between the `multilabel` markers is replaced (or appended).
"""
import sys, time, argparse, platform, datetime, re, warnings
from pathlib import Path
import numpy as np, torch, torch.nn as nn
import fast_cam
from fast_cam.all import *

HERE = Path(__file__).parent
p = argparse.ArgumentParser()
p.add_argument('--quick', action='store_true')
p.add_argument('--threads', type=int, default=2)
p.add_argument('--reps', type=int, default=5)
p.add_argument('--classes', type=int, default=10)
p.add_argument('--bs', type=int, default=4)
p.add_argument('--size', type=int, default=224)
p.add_argument('--out', default=str(HERE/'RESULTS.md'))
a = p.parse_args()
torch.set_num_threads(a.threads)
warnings.filterwarnings('ignore')
BEGIN,END = '<!-- multilabel: benchmarks/multilabel.py -->','<!-- /multilabel -->'

def models():
    import torchvision.models as tvm
    C = a.classes
    if a.quick:
        torch.manual_seed(0)
        yield 'tiny cnn', nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.ReLU(), nn.Conv2d(8,16,3,stride=2,padding=1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16,C)).eval()
        return
    for name,f in [('resnet18', tvm.resnet18), ('densenet121', tvm.densenet121), ('convnext_tiny', tvm.convnext_tiny)]:
        torch.manual_seed(0)
        yield name, f(weights=None, num_classes=C).eval()

def cases(m, x, l):
    C = a.classes
    return {'one class': lambda: explain(m, x, 'gradcam', target=0, layer=l),
            "target='all' (batched backward)": lambda: explain(m, x, 'gradcam', target='all', layer=l),
            "target='all', loop on one graph": lambda: _loop_graph(m, x, l),
            f'{C} calls, one per class': lambda: torch.stack([explain(m, x, 'gradcam', target=c, layer=l) for c in range(C)], 1)}

def _loop_graph(m, x, l):
    "The fallback path: one forward, a loop of C backward passes with retain_graph (`capture(..., batched=False)`)"
    c = capture(m, x, [l], 'all', batched=False)
    C,n = len(c.grads[0]),len(x)
    g,ac = c.grads[0].flatten(0,1),c.acts[0].expand(C,*c.acts[0].shape).flatten(0,1)
    return get_method('gradcam').combine(ac, g).unflatten(0, (C,n)).transpose(0,1)

def run(name, m):
    x = torch.randn(a.bs, 3, 16 if a.quick else a.size, 16 if a.quick else a.size)
    l = cam_layer(m, x)
    cs = cases(m, x, l)
    # the three ways agree (the batched path is the one `explain` takes)
    ref = cs[f'{a.classes} calls, one per class']()
    err = max(float((cs[k]()-ref).abs().max()/ref.abs().max().clamp_min(1e-12)) for k in ("target='all' (batched backward)", "target='all', loop on one graph"))
    ts = {k:[] for k in cs}
    for f in cs.values(): f()  # warm-up
    for r in range(a.reps):  # interleaved, so a slower moment of the shared machine hits every case alike
        for k,f in cs.items():
            t0 = time.perf_counter(); f(); ts[k].append(time.perf_counter()-t0)
    med = {k:float(np.median(v)) for k,v in ts.items()}
    rows = [f"| {k} | {med[k]:.4f} | {min(v):.4f}–{max(v):.4f} | {med[k]/med['one class']:.2f}× |" for k,v in ts.items()]
    hdr = (f"#### {name} (batch {a.bs}, {x.shape[-1]} px, {a.classes} classes, layer {module_name(m, l)!r})\n\n"
           f"Largest relative difference from one call per class: {err:.1e}.\n\n"
           "| | median s | min–max s | × one class |\n|---|---|---|---|\n")
    return hdr + '\n'.join(rows) + '\n', med["target='all' (batched backward)"]/med['one class']

def main():
    head = (f"### Every class at once: target='all'\n\n"
            f"{datetime.date.today()} · {platform.machine()} · torch {torch.__version__} · {a.threads} threads · fast_cam {fast_cam.__version__} · "
            f"{a.reps} timed repetitions after a warm-up, interleaved; median and min–max.\n\n"
            f"Grad-CAM of every class: one forward and the {a.classes} backward passes through the layers after the target layer, batched "
            "(`torch.autograd.grad(..., is_grads_batched=True)`); the loop on one graph is the fallback for models vmap cannot batch. "
            "Target: every class in at most 3× the time of one class.\n\n")
    parts,ratios = [],{}
    for name,m in models():
        s,r = run(name, m); parts.append(s); ratios[name] = r
        print(s, flush=True)
    summ = 'Ratio all/one class: ' + ', '.join(f'{k} {v:.2f}×' for k,v in ratios.items()) + '.\n'
    sec = head + '\n'.join(parts) + '\n' + summ
    print(summ)
    if a.quick: return
    out = Path(a.out)
    txt = out.read_text() if out.exists() else ''
    block = f"{BEGIN}\n{sec}{END}\n"
    if BEGIN in txt and END in txt: txt = re.sub(re.escape(BEGIN)+'.*?'+re.escape(END)+r'\n?', lambda _: block, txt, flags=re.S)
    else: txt = txt.rstrip('\n') + '\n\n' + block
    out.write_text(txt)
    print(f'wrote {out}')

if __name__=='__main__': main()
