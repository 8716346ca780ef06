"""Execute notebooks so their outputs are stored (the docs show them), then clean them with nbdev-clean.

    python tools/nbrun.py nbs/04_learner.ipynb [more.ipynb ...]

Runs from the notebook's folder and stops at the first failing cell. Outputs are copied back by cell id, under the
lock `tools/nbcell.py` takes, into the notebook as it is on disk then: cells edited meanwhile keep their new source.
"""
import os, re, sys, json, fcntl, subprocess
from pathlib import Path
from fastcore.nbio import read_nb
from execnb.shell import CaptureShell
from nbshrink import shrink_output

def terminal(s):
    "A stream as a terminal shows it at the end: each `\\r` returns to the line's start and overwrites; emptied progress lines go"
    out = []
    for line in s.split('\n'):
        buf = []
        for seg in line.split('\r'): buf[:len(seg)] = list(seg)
        l = ''.join(buf).rstrip()
        if '\r' in line and re.fullmatch(r'(Epoch \d+/\d+ :)?[\s█]*', l): continue
        out.append(l)
    return '\n'.join(out)

def _tidy(o):
    "fastprogress's console bars become the table a terminal ends with; stream outputs left empty go"
    if o.get('output_type')=='stream':
        t = ''.join(o['text'])
        if '\r' in t: o['text'] = terminal(t)
        return o if ''.join(o['text']).strip() else None
    return o

def run(p):
    p = Path(p).absolute()
    nb = read_nb(p)
    cwd = os.getcwd()
    os.chdir(p.parent)
    sh = CaptureShell(); sh.set_path(p.parent)
    # a third party's deprecation notice is not part of the docs
    sh.run("import warnings; warnings.filterwarnings('ignore', message='.*torch.jit.script.*')")
    try: sh.run_all(nb, exc_stop=True)
    finally: os.chdir(cwd)
    done = {c.get('id'):(''.join(c.get('source','')), c) for c in nb.cells if c.cell_type=='code'}
    with open(p.with_suffix('.ipynb.lock'), 'w') as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        cur = json.loads(p.read_text())
        for c in cur['cells']:
            src,ran = done.get(c.get('id'), (None,None))
            if ran is not None and src==''.join(c['source']):
                c['outputs'] = [shrink_output(o) for o in (_tidy(dict(o)) for o in ran.get('outputs', [])) if o is not None]
                c['execution_count'] = ran.get('execution_count')
        p.write_text(json.dumps(cur, indent=1, ensure_ascii=False)+'\n')
    subprocess.run(['nbdev-clean', '--fname', str(p)], check=False)
    print(f"ran {p.name}")

if __name__=='__main__':
    os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    for f in sys.argv[1:]: run(f)
