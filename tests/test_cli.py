"The fast_cam command, run as a user runs it: in a subprocess, on tiny settings (its quick refusals and `--help` in-process)."
import re, subprocess, sys, os, io, contextlib, pytest
from types import SimpleNamespace
from unittest import mock
from pathlib import Path
from PIL import Image
import numpy as np, pandas as pd
from conftest import kill_when, load_quiet, manifest_parts

EXE = Path(sys.executable).parent/'fast_cam'

def run(*args, cwd):
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, capture_output=True, text=True, env={**os.environ, 'MPLBACKEND':'Agg'})

def run_here(*args, cwd):
    "`fast_cam *args` through its entry point in this process (no interpreter start-up): exit status, stdout, stderr"
    from fast_cam.cli import main
    out,err,old = io.StringIO(),io.StringIO(),os.getcwd()
    os.chdir(cwd)
    try:
        with mock.patch.object(sys, 'argv', ['fast_cam', *map(str, args)]), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try: main(); code = 0
            except SystemExit as e: code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally: os.chdir(old)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp('demo')
    r = run('demo', '--epochs', 2, '--n', 400, '--k', 4, '--n-overlays', 3, '--out', 'out', cwd=d)
    assert r.returncode==0, r.stderr
    return d, r.stdout

def test_demo_files_and_figures(demo):
    d,out = demo
    o = d/'out'
    assert sorted(p.name for p in o.iterdir())==['learner.pkl', 'methods.png', 'overlays', 'top_losses.png']
    assert len(list((o/'overlays').glob('*.png')))==3
    for f in ('top_losses.png', 'methods.png'):
        im = np.asarray(Image.open(o/f))
        assert im.shape[0]>200 and im.shape[1]>400 and im.std()>10, f'{f} is not a blank picture'
    acc = float(re.search(r'validation accuracy ([\d.]+)', out).group(1))
    pim = float(re.search(r'peak inside the object mask: ([\d.]+) of (\d+)', out).group(1))
    assert 0<=acc<=1 and 0<=pim<=1 and '80 validation images' in out

def test_explain(demo, tmp_path):
    d,_ = demo
    img = tmp_path/'one.png'
    Image.fromarray(np.full((50,70,3), 120, np.uint8)).save(img)
    Image.fromarray(np.full((50,70), 120, np.uint8)).save(tmp_path/'gray.png')
    r = run('explain', d/'out'/'learner.pkl', img, tmp_path/'gray.png', '--method', 'gradcam', '--out', 'ex', cwd=tmp_path)
    assert r.returncode==0, r.stderr
    assert 'fast_cam explain: 2 images, gradcam' in r.stdout and 'wrote 2 maps and overlays' in r.stdout
    assert sorted(p.name for p in (tmp_path/'ex').iterdir())==['00000_one.npy', '00000_one.png', '00001_gray.npy', '00001_gray.png', 'manifest.csv']
    mf = pd.read_csv(tmp_path/'ex'/'manifest.csv')
    assert [Path(o).name for o in mf['item']]==['one.png', 'gray.png'] and set(mf.predicted)<={'circle','cross','square','triangle'}
    r = run('explain', d/'out'/'learner.pkl', img, '--layer', '0,2', '--target', 'square', '--method', 'guided_gradcam', '--out', 'ex2', cwd=tmp_path)
    assert r.returncode==0, r.stderr
    assert (tmp_path/'ex2'/'00000_one.png').exists() and pd.read_csv(tmp_path/'ex2'/'manifest.csv').explained.tolist()==['square']

def test_explain_folder(demo, tmp_path):
    "1,000 images from a folder, a subfolder and a glob, in batches with a progress bar; bad paths reported at the end, the rest written"
    d,_ = demo
    rng = np.random.default_rng(0)
    (tmp_path/'imgs'/'sub').mkdir(parents=True)
    for i in range(1000):
        Image.fromarray(rng.integers(0, 255, (32,32,3), dtype=np.uint8)).save(tmp_path/'imgs'/('sub' if i%10==0 else '.')/f'{i:04d}.png')
    (tmp_path/'imgs'/'broken.png').write_bytes(b'not a png')
    r = run('explain', d/'out'/'learner.pkl', 'imgs', 'imgs/sub/*.png', 'missing.png', 'none/*.jpg', '--no-overlays', '--bs', 128, '--out', 'ex', cwd=tmp_path)
    assert r.returncode==0, r.stderr  # some paths were bad: listed, not fatal without --strict
    assert '100.00% [8/8' in r.stdout, 'fastai progress bar over the 8 batches'
    assert 'fast_cam explain: 1000 images' in r.stdout and 'wrote 1000 maps' in r.stdout
    assert '3 path(s) skipped' in r.stderr and 'missing.png: not found' in r.stderr and 'none/*.jpg: no image file matches' in r.stderr
    assert 'broken.png: not a readable image' in r.stderr and 'Traceback' not in r.stderr
    mf = pd.read_csv(tmp_path/'ex'/'manifest.csv', keep_default_na=False)
    ok = mf[mf.error=='']
    assert ok.idx.astype(int).tolist()==list(range(1000)) and mf['item'].is_unique and (ok.overlay=='').all()
    assert mf[mf.error!=''][['item','error']].values.tolist()==[['missing.png', 'not found'], ['none/*.jpg', 'no image file matches this pattern'],
        ['imgs/broken.png', 'not a readable image (UnidentifiedImageError: cannot identify image file)']]
    assert len(list((tmp_path/'ex').glob('*.npy')))==1000

def _bad_files(f):
    "Files that look like images by their name and are not: what a real folder of scans or photos holds"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (48,48,3), dtype=np.uint8)).save(f/'whole.jpg', quality=90)
    Image.fromarray(rng.integers(0, 255, (48,48,3), dtype=np.uint8)).save(f/'whole.png')
    bad = {'empty.png': b'', 'cut.jpg': (f/'whole.jpg').read_bytes()[:700], 'cut.png': (f/'whole.png').read_bytes()[:3000],
           'notes.png': b'shopping list: eggs, milk\n', 'header.jpg': (f/'whole.jpg').read_bytes()[:20]}
    for k,v in bad.items(): (f/k).write_bytes(v)
    return {'empty.png': 'not a readable image (empty file)',
            'cut.jpg': 'not a readable image (OSError: image file is truncated',   # verify() passes this one
            'cut.png': 'not a readable image (OSError: image file is truncated',
            'notes.png': 'not a readable image (UnidentifiedImageError: cannot identify image file)',
            'header.jpg': 'not a readable image ('}

def test_explain_bad_files(demo, tmp_path):
    "Zero-byte, truncated and non-image files among good ones: the good ones are explained, the bad listed with their error, exit 0 (1 with --strict)"
    d,_ = demo
    f = tmp_path/'scans'; f.mkdir()
    for i in range(6): Image.fromarray(np.full((48,48,3), 40*i, np.uint8)).save(f/f'ok{i}.png')  # one size: the demo's learner has no Resize
    why = _bad_files(f)
    for strict in (False, True):
        out = f'ex{int(strict)}'
        r = run('explain', d/'out'/'learner.pkl', 'scans', '--out', out, *(['--strict'] if strict else []), cwd=tmp_path)
        assert r.returncode==int(strict), r.stderr
        assert 'fast_cam explain: 8 images' in r.stdout and 'wrote 8 maps and overlays' in r.stdout and 'Traceback' not in r.stderr
        assert '5 path(s) skipped' in r.stderr
        for k,w in why.items(): assert f'scans/{k}: {w}' in r.stderr, (k, r.stderr)
        mf = pd.read_csv(tmp_path/out/'manifest.csv', keep_default_na=False)
        assert mf.columns.tolist()==['idx','item','actual','predicted','probability','explained','map','overlay','error']
        ok,bad = mf[mf.error==''],mf[mf.error!='']
        assert sorted(Path(p).name for p in ok['item'])==sorted([f'ok{i}.png' for i in range(6)]+['whole.jpg','whole.png'])
        assert ok.idx.astype(int).tolist()==list(range(8)) and all((tmp_path/out/m).exists() for m in ok['map'])
        assert sorted(Path(p).name for p in bad['item'])==sorted(why) and (bad.idx=='').all() and (bad['map']=='').all()
        for p,e in zip(bad['item'], bad.error): assert e.startswith(why[Path(p).name])
        assert len(list((tmp_path/out).glob('*.npy')))==8

def test_explain_resume(demo, tmp_path):
    "`fast_cam explain --resume` after a kill -9: only the images without a finished map and overlay are computed; one row each"
    d,_ = demo
    rng = np.random.default_rng(2)
    (tmp_path/'imgs').mkdir()
    for i in range(48): Image.fromarray(rng.integers(0, 255, (32,32,3), dtype=np.uint8)).save(tmp_path/'imgs'/f'{i:03d}.png')
    o = tmp_path/'ex'
    cmd = [str(EXE), 'explain', str(d/'out'/'learner.pkl'), 'imgs', '--bs', '8', '--out', 'ex']
    kill_when(cmd, lambda: len(list(o.glob('manifest.part*.csv')))>=2, {**os.environ, 'MPLBACKEND':'Agg'}, cwd=tmp_path)
    done = manifest_parts(o)
    assert 16<=len(done)<48
    print(f'\nfast_cam explain kill -9: 48 images, {len(done)} finished before the kill ({len(list(o.glob("*.npy")))} maps, {len(list(o.glob("*.png")))} overlays on disk)')
    r = run(*cmd[1:], '--resume', cwd=tmp_path)
    assert r.returncode==0, r.stderr
    print(r.stdout.splitlines()[-1])
    assert f'wrote {48-len(done)} maps and overlays ({len(done)} already in ex from an earlier run)' in r.stdout
    mf = pd.read_csv(o/'manifest.csv', keep_default_na=False)
    assert mf.idx.tolist()==list(range(48)) and (mf.error=='').all()
    assert sorted(p.name for p in o.glob('*.npy'))==sorted(mf['map']) and sorted(p.name for p in o.glob('*.png'))==sorted(mf.overlay)
    assert not list(o.glob('manifest.part*')) and not list(o.glob('.*.tmp'))
    learn = load_quiet(d/'out'/'learner.pkl')
    with learn.no_bar(): ref = learn.get_cams(learn.dls.test_dl([tmp_path/p for p in mf['item']], bs=8), with_preds=False)
    for r in mf.itertuples(): np.testing.assert_allclose(np.load(o/r.map), ref[r.idx].numpy(), rtol=0, atol=1e-5)

def test_help_lists_methods(demo):
    from fast_cam.all import methods
    for cmd in ('explain', 'demo'):
        r = run_here(cmd, '--help', cwd=demo[0])
        assert r.returncode==0 and all(k in r.stdout for k in methods), r.stdout
        if cmd=='explain': assert '--resume' in r.stdout and '--strict' in r.stdout

def test_demo_shows_training(demo):
    out = demo[1]
    assert 'train_loss' in out and 'valid_loss' in out and 'accuracy' in out, "fastai's epoch table"

@pytest.mark.parametrize('args,msg', [
    (['explain', 'missing.pkl', 'x.png'], 'Learner file not found'),
    (['explain', 'IMG', 'IMG'], 'not a fastai Learner'),
    (['explain', 'PKL', 'missing.png'], 'missing.png: not found'),
    (['explain', 'PKL', 'BAD'], 'not a readable image'),
    (['explain', 'PKL', 'IMG', '--target', 'hexagon'], "Unknown label 'hexagon'"),
    (['bogus'], 'usage: fast_cam'),
])
def test_errors(demo, tmp_path, args, msg):
    d,_ = demo
    Image.fromarray(np.zeros((8,8,3), np.uint8)).save(tmp_path/'i.png')
    (tmp_path/'bad.png').write_bytes(b'nope')
    subs = {'PKL': d/'out'/'learner.pkl', 'IMG': tmp_path/'i.png', 'BAD': tmp_path/'bad.png'}
    r = run_here(*[subs.get(a, a) for a in args], cwd=tmp_path)
    assert r.returncode==2 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr

# --- fast_cam report ---------------------------------------------------------------------------------------------
def _class_folders(d, n=24, seed=1):
    "`d/{class}/{i}.png`: `Shapes` images in folders named by their class, as `fast_cam report` reads them"
    from fast_cam.data import Shapes
    sh = Shapes(n, seed=seed)
    for i in range(n):
        (d/sh.vocab[sh.labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(sh.images[i]).save(d/sh.vocab[sh.labels[i]]/f'{i}.png')
    return sh

def test_report(demo, tmp_path):
    "`fast_cam report learner.pkl images/ --out r.html` writes one self-contained page, labelled by folder"
    from html.parser import HTMLParser
    import base64
    d,_ = demo
    sh = _class_folders(tmp_path/'imgs')
    r = run_here('report', d/'out'/'learner.pkl', tmp_path/'imgs', '--out', 'r.html', '--k', 4, '--n-trust', 4,
                 cwd=tmp_path)
    assert r.returncode==0, r.stderr
    f = tmp_path/'r.html'
    assert f.exists() and 'wrote' in r.stdout and '24 images' in r.stdout
    class P(HTMLParser):
        srcs,ids = [],[]
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag=='img': self.srcs.append(a['src'])
            if tag=='section': self.ids.append(a['id'])
    p = P(); p.feed(s := f.read_text(encoding='utf-8'))
    assert p.ids==['shortcuts','summary','top-losses','classes','confusions','trust']
    assert p.srcs and all(o.startswith('data:image/jpeg;base64,') for o in p.srcs)
    Image.open(io.BytesIO(base64.b64decode(p.srcs[0].split(',')[1]))).load()
    assert '24 items' in s and 'https:' not in s

def test_report_needs_class_folders(demo, tmp_path):
    d,_ = demo
    (tmp_path/'dogs').mkdir()
    Image.fromarray(np.full((64,64,3), 90, np.uint8)).save(tmp_path/'dogs'/'a.png')
    r = run_here('report', d/'out'/'learner.pkl', tmp_path/'dogs', '--out', 'r.html', cwd=tmp_path)
    assert r.returncode==2 and 'named after its class' in r.stderr and 'dogs' in r.stderr
    assert not (tmp_path/'r.html').exists()
    r = run_here('report', d/'out'/'learner.pkl', cwd=tmp_path)
    assert r.returncode==2 and 'at least one image' in r.stderr
