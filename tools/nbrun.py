"""Execute notebooks so their outputs are stored (the docs show them), then clean them with nbdev-clean.

    python tools/nbrun.py nbs/05_learner.ipynb [more.ipynb ...]

Runs from the notebook's folder and stops at the first failing cell. Outputs are copied back by cell id, under the
lock `tools/nbcell.py` takes, into the notebook as it is on disk then: cells edited meanwhile keep their new source.
"""
import os, sys, json, fcntl, subprocess
from pathlib import Path
from fastcore.nbio import read_nb
from execnb.shell import CaptureShell

def run(p):
    p = Path(p).absolute()
    nb = read_nb(p)
    cwd = os.getcwd()
    os.chdir(p.parent)
    sh = CaptureShell(); sh.set_path(p.parent)
    try: sh.run_all(nb, exc_stop=True)
    finally: os.chdir(cwd)
    done = {c.get('id'):(''.join(c.get('source','')), c) for c in nb.cells if c.cell_type=='code'}
    with open(p.with_suffix('.ipynb.lock'), 'w') as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        cur = json.loads(p.read_text())
        for c in cur['cells']:
            src,ran = done.get(c.get('id'), (None,None))
            if ran is not None and src==''.join(c['source']):
                c['outputs'] = [dict(o) for o in ran.get('outputs', [])]
                c['execution_count'] = ran.get('execution_count')
        p.write_text(json.dumps(cur, indent=1, ensure_ascii=False)+'\n')
    subprocess.run(['nbdev-clean', '--fname', str(p)], check=False)
    print(f"ran {p.name}")

if __name__=='__main__':
    os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    for f in sys.argv[1:]: run(f)
