"""Replace text in the one notebook cell that holds it: `sub(old, new)` searches every notebook in nbs/ and fails, writing
nothing, unless `old` occurs exactly once. `add(nb, after_id, src, kind='code')` inserts a cell and returns its id."""
import json, uuid
from pathlib import Path
NBS = Path(__file__).resolve().parent.parent/'nbs'

def _load(p): return json.loads(p.read_text())
def _save(p, nb): p.write_text(json.dumps(nb, indent=1, ensure_ascii=False)+'\n')
def _lines(s): return s.splitlines(keepends=True)

def sub(old, new, count=1):
    hits = []
    for p in sorted(NBS.glob('*.ipynb')):
        nb = _load(p)
        for c in nb['cells']:
            k = ''.join(c['source']).count(old)
            if k: hits.append((p, c['id'], k))
    if len(hits)!=1 or hits[0][2]!=count: raise SystemExit(f"{old[:80]!r}: found {hits}")
    p,cid,_ = hits[0]
    nb = _load(p)
    c = next(c for c in nb['cells'] if c['id']==cid)
    c['source'] = _lines(''.join(c['source']).replace(old, new))
    if c['cell_type']=='code': c['outputs'],c['execution_count'] = [],None
    _save(p, nb)
    return p.name, cid

def add(nbname, after_id, src, kind='code'):
    p = NBS/f'{nbname}.ipynb'; nb = _load(p)
    c = dict(cell_type=kind, id=uuid.uuid4().hex[:8], metadata={}, source=_lines(src))
    if kind=='code': c.update(outputs=[], execution_count=None)
    i = 0 if after_id=='top' else next(i for i,o in enumerate(nb['cells']) if o['id']==after_id)+1
    nb['cells'].insert(i, c); _save(p, nb)
    return c['id']

def cell_of(text):
    "`(notebook, id)` of the one cell holding `text`"
    hits = [(p.name, c['id']) for p in sorted(NBS.glob('*.ipynb')) for c in _load(p)['cells'] if text in ''.join(c['source'])]
    if len(hits)!=1: raise SystemExit(f"{text[:80]!r}: found {hits}")
    return hits[0]
