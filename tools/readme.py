"Render nbs/index.ipynb to README.md without quarto: markdown cells as they are, code cells and their text/image outputs, `#| hide` cells left out."
import json, re, base64, sys
from pathlib import Path

def render(nb_path='nbs/index.ipynb', out='README.md', img_dir='nbs/images'):
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for i,c in enumerate(nb['cells']):
        src = ''.join(c['source'])
        if c['cell_type']=='markdown':
            src = re.sub(r'\]\((images/)', r'](nbs/\1', src)  # pictures live beside the notebooks
            parts.append(src); continue
        if re.search(r'^#\|\s*(hide|export)', src, flags=re.M): continue
        code = '\n'.join(l for l in src.split('\n') if not l.startswith('#|'))
        if not re.search(r'^#\|\s*hide_input', src, flags=re.M): parts.append(f'```python\n{code}\n```')
        for o in c.get('outputs', []):
            d = o.get('data', {})
            if 'image/png' in d:
                Path(img_dir).mkdir(parents=True, exist_ok=True)
                p = Path(img_dir)/f'readme_{i}.png'
                p.write_bytes(base64.b64decode(d['image/png']))
                parts.append(f'![]({p.as_posix()})')
            elif 'text/plain' in d or 'text' in o:
                txt = ''.join(d.get('text/plain', o.get('text', '')))
                if txt.strip(): parts.append(f'    ' + txt.rstrip().replace('\n', '\n    '))
    Path(out).write_text('\n\n'.join(parts).strip() + '\n')

if __name__=='__main__': render(*sys.argv[1:])
