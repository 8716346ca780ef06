"The package as a whole: `from fast_cam.all import *` gives every module's public API, and no module imports another module's private names."

def test_all_exports_every_module():
    "`from fast_cam.all import *` gives the public API of every module but the command line"
    import importlib, pkgutil, fast_cam, fast_cam.all as A
    mods = [n for _,n,_ in pkgutil.iter_modules(fast_cam.__path__) if not n.startswith('_') and n not in ('all','cli')]
    assert {'callback','metrics','methods','core'} <= set(mods)
    for n in mods:
        missing = [o for o in importlib.import_module(f'fast_cam.{n}').__all__ if o not in A.__all__ or not hasattr(A, o)]
        assert not missing, (n, missing)

def test_no_private_imports_across_modules():
    "No module imports another module's private helper"
    import re, fast_cam
    from pathlib import Path
    for f in Path(fast_cam.__file__).parent.glob('*.py'):
        for l in f.read_text().splitlines():
            if re.match(r'from \.\w+ import', l): assert not re.search(r'\b_\w+', l.split('import',1)[1]), f'{f.name}: {l}'
