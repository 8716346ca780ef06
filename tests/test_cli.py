"The fast_cam command, run as a user runs it: in a subprocess, on tiny settings."
import re, subprocess, sys, os, pytest
from pathlib import Path
from PIL import Image
import numpy as np

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
    lines = r.stdout.strip().splitlines()
    assert len(lines)==2 and all(re.search(r': (circle|cross|square|triangle) \(0\.\d{3}\) -> ', l) for l in lines)
    assert sorted(p.name for p in (tmp_path/'ex').iterdir())==['gray_gradcam.png', 'one_gradcam.png']
    r = run('explain', d/'out'/'learner.pkl', img, '--layer', '0,2', '--target', 'square', '--method', 'guided_gradcam', '--out', 'ex2', cwd=tmp_path)
    assert r.returncode==0, r.stderr
    assert (tmp_path/'ex2'/'one_guided_gradcam.png').exists()

@pytest.mark.parametrize('args,msg', [
    (['explain', 'missing.pkl', 'x.png'], 'Learner file not found'),
    (['explain', 'IMG', 'IMG'], 'not a fastai Learner'),
    (['explain', 'PKL', 'missing.png'], 'Image file not found'),
    (['explain', 'PKL', 'BAD'], 'corrupt or not an image'),
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
