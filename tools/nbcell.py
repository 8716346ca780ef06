"""Edit notebook cells from the shell, one cell at a time, under a lock so that several editors can work on one notebook.

    python tools/nbcell.py list NB                      # id, type, first line of every cell
    python tools/nbcell.py show NB ID                   # a cell's source
    python tools/nbcell.py set NB ID FILE|-             # replace a cell's source (outputs cleared for code cells)
    python tools/nbcell.py insert NB AFTER_ID FILE|- [markdown]   # new cell after AFTER_ID ('top' for first); prints its id
    python tools/nbcell.py delete NB ID

From Python, `sub(NB, ID, old, new)` replaces the one occurrence of `old` in a cell's source (and fails, writing nothing, unless
there is exactly one).
"""
import json, sys, fcntl, uuid
from pathlib import Path

def _src(f): return sys.stdin.read() if f=='-' else Path(f).read_text()
def _lines(s): return [l for l in s.splitlines(keepends=True)]

def _find(nb, cid):
    for i,c in enumerate(nb['cells']):
        if c.get('id')==cid: return i
    raise SystemExit(f"no cell with id {cid!r}")

def main(cmd, nbp, *args):
    p = Path(nbp)
    # read the new source before taking the lock: `show NB ID | sed ... | set NB ID -` must not wait on itself
    if cmd=='set': args = (args[0], _src(args[1]))
    elif cmd=='insert': args = (args[0], _src(args[1]), *args[2:])
    with open(p.with_suffix('.ipynb.lock'), 'w') as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        nb = json.loads(p.read_text())
        if cmd=='list':
            for c in nb['cells']: print(c.get('id'), c['cell_type'][:4], (''.join(c['source']).splitlines() or [''])[0][:100])
            return
        if cmd=='show': print(''.join(nb['cells'][_find(nb, args[0])]['source'])); return
        if cmd=='set':
            c = nb['cells'][_find(nb, args[0])]
            c['source'] = _lines(args[1])
            if c['cell_type']=='code': c['outputs'],c['execution_count'] = [],None
        elif cmd=='insert':
            kind = args[2] if len(args)>2 else 'code'
            cid = uuid.uuid4().hex[:8]
            c = dict(cell_type=kind, id=cid, metadata={}, source=_lines(args[1]))
            if kind=='code': c.update(execution_count=None, outputs=[])
            i = 0 if args[0]=='top' else _find(nb, args[0])+1
            nb['cells'].insert(i, c)
            print(cid)
        elif cmd=='delete': del nb['cells'][_find(nb, args[0])]
        else: raise SystemExit(__doc__)
        p.write_text(json.dumps(nb, indent=1, ensure_ascii=False)+'\n')

def sub(nbp, cid, old, new):
    "Replace the single occurrence of `old` by `new` in cell `cid` of notebook `nbp` (outputs cleared for code cells)"
    p = Path(nbp)
    with open(p.with_suffix('.ipynb.lock'), 'w') as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        nb = json.loads(p.read_text())
        c = nb['cells'][_find(nb, cid)]
        s = ''.join(c['source'])
        if s.count(old)!=1: raise SystemExit(f"{nbp} {cid}: {s.count(old)} occurrences of {old[:60]!r}")
        c['source'] = _lines(s.replace(old, new))
        if c['cell_type']=='code': c['outputs'],c['execution_count'] = [],None
        p.write_text(json.dumps(nb, indent=1, ensure_ascii=False)+'\n')

if __name__=='__main__':
    if len(sys.argv)<3: raise SystemExit(__doc__)
    main(*sys.argv[1:])
