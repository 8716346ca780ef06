"""Keep the notebooks small: every stored PNG output at most `MAX_W` pixels wide and quantised to a 256-colour palette.

    python tools/nbshrink.py nbs/*.ipynb       # rewrite the notebooks' PNG outputs in place (under tools/nbcell.py's lock)

`tools/nbrun.py` applies `shrink_output` to every output it stores, so a re-run never brings the large blobs back."""
import io, sys, json, base64, fcntl
from pathlib import Path
from PIL import Image

MAX_W = 800  # the docs column is narrower than this; matplotlib's inline figures at 2x come out up to 2000 px
MAX_AREA = 360_000  # pixels: a tall grid (the tutorial's epochs × items history) is scaled down to this

def shrink_png(b):
    "PNG bytes `b`, downscaled to `MAX_W` wide and palette-quantised, or `b` itself when that is not smaller"
    im = Image.open(io.BytesIO(b)).convert('RGBA')
    k = min(1, MAX_W/im.width, (MAX_AREA/(im.width*im.height))**0.5)
    if k<1: im = im.resize((round(im.width*k), round(im.height*k)), Image.LANCZOS)
    buf = io.BytesIO()
    im.quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, 'PNG', optimize=True)
    return buf.getvalue() if len(buf.getvalue())<len(b) else b

def shrink_output(o):
    "A notebook output `o` with its PNG (if any) shrunk"
    d = o.get('data', {})
    if 'image/png' not in d: return o
    b = base64.b64decode(d['image/png'])
    s = shrink_png(b)
    if s is not b: d['image/png'] = base64.b64encode(s).decode()
    return o

def shrink(p):
    p = Path(p)
    with open(p.with_suffix('.ipynb.lock'), 'w') as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        n0 = p.stat().st_size
        nb = json.loads(p.read_text())
        for c in nb['cells']:
            for o in c.get('outputs', []): shrink_output(o)
        p.write_text(json.dumps(nb, indent=1, ensure_ascii=False)+'\n')
    print(f"{p.name}: {n0//1024} KB -> {p.stat().st_size//1024} KB")

if __name__=='__main__':
    for f in sys.argv[1:]: shrink(f)
