"`learn.get_cams` in a real 2-process `torchrun` job (gloo on CPU): each item once, one merged manifest, maps equal to one process'."
import os, sys, subprocess, textwrap, pytest, torch, numpy as np, pandas as pd
from pathlib import Path
from fastai.vision.all import load_learner, get_image_files, PILImage
from fast_cam.callback import shard_dl, distrib_info
from fast_cam.data import shapes_learner

SCRIPT = textwrap.dedent('''
    import os, sys, warnings, torch
    warnings.filterwarnings('ignore')
    from pathlib import Path
    from fastai.vision.all import *
    from fast_cam.all import *
    torch.set_num_threads(1)
    learner,folder,res = map(Path, sys.argv[1:4])
    learn = load_learner(learner, cpu=True)
    files = get_image_files(folder).sorted()
    dl = learn.dls.test_dl(files, bs=4)
    rank = int(os.environ['RANK'])
    maps,preds,_ = learn.get_cams(dl, out=res/'out')                                      # gathered: every process gets all
    tg = list(range(len(files)))
    m2 = learn.get_cams(dl, target=[i%4 for i in tg], with_preds=False, size='input')    # one target per item, split too
    man = learn.get_cams(dl, method='cam', out=res/'stream', with_preds=False)            # streamed: only the manifest
    torch.save(dict(maps=maps, preds=preds, m2=m2, n_stream=len(man), world=torch.distributed.get_world_size()), res/f'rank{rank}.pt')
''')

@pytest.fixture(scope='module')
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp('dist')
    learn = shapes_learner(n=200, epochs=0, seed=1)
    learn.export(d/'learner.pkl')
    sh = learn.dls.shapes
    (d/'imgs').mkdir()
    for i in range(23): PILImage.create(sh.images[i]).save(d/'imgs'/f'{i:03d}.png')  # 23 items over 2 processes: uneven shards
    (d/'run.py').write_text(SCRIPT)
    env = {**os.environ, 'OMP_NUM_THREADS':'1', 'MPLBACKEND':'Agg'}
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(d/'run.py'),
                        str(d/'learner.pkl'), str(d/'imgs'), str(d)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode==0, r.stderr[-3000:]
    return d

def test_two_processes_equal_one(job):
    d = job
    learn = load_learner(d/'learner.pkl', cpu=True)
    files = get_image_files(d/'imgs').sorted()
    dl = learn.dls.test_dl(files, bs=4)
    with learn.no_bar():
        maps,preds,_ = learn.get_cams(dl)
        m2 = learn.get_cams(dl, target=[i%4 for i in range(len(files))], with_preds=False, size='input')
    for r in (0,1):
        res = torch.load(d/f'rank{r}.pt')
        assert res['world']==2
        assert res['maps'].shape==maps.shape==(23, 8, 8)
        torch.testing.assert_close(res['maps'], maps, rtol=0, atol=1e-5)
        torch.testing.assert_close(res['preds'], preds, rtol=0, atol=1e-5)
        torch.testing.assert_close(res['m2'], m2, rtol=0, atol=1e-5)
        assert res['n_stream']==23

def test_one_merged_manifest(job):
    for sub in ('out','stream'):
        o = job/sub
        df = pd.read_csv(o/'manifest.csv')
        assert df.idx.tolist()==list(range(23)), 'each item exactly once, in data set order'
        assert [Path(p).name for p in df['item']]==[f'{i:03d}.png' for i in range(23)]
        assert sorted(p.name for p in o.glob('*.npy'))==[f'{i:05d}_{i:03d}.npy' for i in range(23)]
        assert not list(o.glob('manifest.part*')), 'the per-process parts are merged away'
    df = pd.read_csv(job/'out'/'manifest.csv')
    learn = load_learner(job/'learner.pkl', cpu=True)
    x = learn.dls.test_dl(get_image_files(job/'imgs').sorted()[5:6]).one_batch()[0]
    torch.testing.assert_close(torch.from_numpy(np.load(job/'out'/df['map'][5])), learn.gradcam(x)[0].cpu(), rtol=0, atol=1e-5)

def test_shard_dl_covers_once():
    learn = shapes_learner(n=120, epochs=0)
    dl = learn.dls.valid
    for world in (1,2,3,7):
        seen = [i for r in range(world) for i in shard_dl(dl, r, world).get_idxs()]
        assert seen==list(range(dl.n))
    assert distrib_info()==(0,1)  # one process: nothing started
