"The fast_cam command, run as a user runs it: in a subprocess, on tiny settings."
import re, subprocess, sys, os, pytest
from pathlib import Path
from PIL import Image
import numpy as np, pandas as pd

EXE = Path(sys.executable).parent/'fast_cam'

def run(*args, cwd):
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, capture_output=True, text=True, env={**os.environ, 'MPLBACKEND':'Agg'})

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
    assert r.returncode==1, r.stderr  # some paths were bad
    assert '100.00% [8/8' in r.stdout, 'fastai progress bar over the 8 batches'
    assert 'fast_cam explain: 1000 images' in r.stdout and 'wrote 1000 maps' in r.stdout
    assert '3 path(s) skipped' in r.stderr and 'missing.png: not found' in r.stderr and 'none/*.jpg: no image file matches' in r.stderr
    assert 'broken.png: not a readable image' in r.stderr and 'Traceback' not in r.stderr
    mf = pd.read_csv(tmp_path/'ex'/'manifest.csv')
    assert mf.idx.tolist()==list(range(1000)) and mf['item'].is_unique and (mf.overlay.isna()).all()
    assert len(list((tmp_path/'ex').glob('*.npy')))==1000

def test_help_lists_methods(demo):
    from fast_cam.methods import methods
    for cmd in ('explain', 'demo'):
        r = run(cmd, '--help', cwd=demo[0])
        assert r.returncode==0 and all(k in r.stdout for k in methods), r.stdout

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
    r = run(*[subs.get(a, a) for a in args], cwd=tmp_path)
    assert r.returncode==2 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr
