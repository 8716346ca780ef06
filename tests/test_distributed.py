"`learn.get_cams` in real 2-process jobs on CPU (gloo), by `torchrun` and by `accelerate launch`: each item once, one merged manifest, maps equal to one process'; a job killed part-way and resumed."
import os, sys, json, socket, subprocess, textwrap, pytest, torch, numpy as np, pandas as pd
from pathlib import Path
from fastai.vision.all import get_image_files, PILImage
from fast_cam.callback import shard_dl, distrib_info
from fast_cam.data import shapes_learner
from conftest import load_quiet, manifest_parts, kill_when, KILLED

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
    if 'ACCELERATE_DYNAMO_BACKEND' in os.environ:  # under `accelerate launch`: fastai's own accelerate path too, which get_cams must not shard twice
        from fastai.distributed import *
        with learn.distrib_ctx(cpu=True): m3,p3,_ = learn.get_cams(dl)
    else: m3 = None
    torch.save(dict(maps=maps, preds=preds, m2=m2, m3=m3, n_stream=len(man), world=torch.distributed.get_world_size()), res/f'rank{rank}.pt')
''')

ENV = {**os.environ, 'OMP_NUM_THREADS':'1', 'MPLBACKEND':'Agg'}
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

# `accelerate launch --cpu --num_processes 2` starts one process: accelerate runs multi-CPU jobs through `mpirun` (`--mpirun_hostfile`).
# `--multi_gpu` is the launcher that starts the processes (by torch.distributed.run, as torchrun does), and it needs no GPU.
def accelerate_launch(): return [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                                 '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', str(_free_port())]

def _setup(d, n=23):
    "An exported learner and `n` PNG files of the synthetic shapes in `d`"
    learn = shapes_learner(n=200, epochs=0, seed=1)
    learn.export(d/'learner.pkl')
    (d/'imgs').mkdir()
    for i in range(n): PILImage.create(learn.dls.shapes.images[i]).save(d/'imgs'/f'{i:03d}.png')
    return d

def _launch(launcher, d, script):
    (d/'run.py').write_text(script)
    r = subprocess.run([*launcher, str(d/'run.py'), str(d/'learner.pkl'), str(d/'imgs'), str(d)], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode==0, r.stderr[-3000:]
    return d

@pytest.fixture(scope='module', params=['torchrun', 'accelerate'])
def job(tmp_path_factory, request):
    "The same script launched by `torchrun` and by `accelerate launch`: 23 items over 2 processes, uneven shards"
    return _launch(TORCHRUN if request.param=='torchrun' else accelerate_launch(), _setup(tmp_path_factory.mktemp(request.param)), SCRIPT)

def test_two_processes_equal_one(job):
    d = job
    learn = load_quiet(d/'learner.pkl')
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
        if 'accelerate' in d.name: torch.testing.assert_close(res['m3'], maps, rtol=0, atol=1e-5)  # inside `learn.distrib_ctx()`

def test_one_merged_manifest(job):
    for sub in ('out','stream'):
        o = job/sub
        df = pd.read_csv(o/'manifest.csv')
        assert df.idx.tolist()==list(range(23)), 'each item exactly once, in data set order'
        assert [Path(p).name for p in df['item']]==[f'{i:03d}.png' for i in range(23)]
        assert sorted(p.name for p in o.glob('*.npy'))==[f'{i:05d}_{i:03d}.npy' for i in range(23)]
        assert not list(o.glob('manifest.part*')), 'the per-process parts are merged away'
    df = pd.read_csv(job/'out'/'manifest.csv')
    learn = load_quiet(job/'learner.pkl')
    x = learn.dls.test_dl(get_image_files(job/'imgs').sorted()[5:6]).one_batch()[0]
    torch.testing.assert_close(torch.from_numpy(np.load(job/'out'/df['map'][5])), learn.gradcam(x)[0].cpu(), rtol=0, atol=1e-5)

def test_shard_dl_covers_once():
    learn = shapes_learner(n=120, epochs=0)
    dl = learn.dls.valid
    for world in (1,2,3,7):
        seen = [i for r in range(world) for i in shard_dl(dl, r, world).get_idxs()]
        assert seen==list(range(dl.n))
    assert distrib_info()==(0,1)  # one process: nothing started

def test_killed_job_resumes(tmp_path):
    "A torchrun job SIGKILLed part-way (launcher and workers) and launched again with resume=True computes only the missing items, shared out anew"
    d = _setup(tmp_path, n=48)
    (d/'run.py').write_text(KILLED)
    o = d/'out'
    cmd = lambda delay, res: [*TORCHRUN, str(d/'run.py'), str(d/'learner.pkl'), str(d/'imgs'), str(o), str(d/res), str(delay)]
    kill_when(cmd(0.3, 'killed.json'), lambda: len(list(o.glob('manifest.part*.csv')))>=4, ENV)
    done = manifest_parts(o)
    assert 16<=len(done)<48 and {int(p.name[13]) for p in o.glob('manifest.part*.csv')}=={0,1}, 'both processes had written'
    print(f'\ntorchrun kill -9: 48 items, {len(done)} finished before the kill ({len(list(o.glob("*.npy")))} maps on disk)')
    r = subprocess.run(cmd(0, 'resumed.json'), capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode==0, r.stderr[-3000:]
    attrs = [json.loads((d/f'resumed.json.{k}').read_text()) for k in (0,1)]
    print(f'resumed: {attrs[0]}')
    assert attrs[0]==attrs[1]=={'computed': 48-len(done), 'kept': len(done)}
    mf = pd.read_csv(o/'manifest.csv')
    assert mf.idx.tolist()==list(range(48)) and sorted(p.name for p in o.glob('*.npy'))==sorted(mf['map'])
    assert not list(o.glob('manifest.part*')) and not list(o.glob('.*.tmp'))
    learn = load_quiet(d/'learner.pkl')
    with learn.no_bar(): ref = learn.get_cams(learn.dls.test_dl(get_image_files(d/'imgs').sorted(), bs=4), with_preds=False)
    for r in mf.itertuples(): np.testing.assert_allclose(np.load(o/r.map), ref[r.idx].numpy(), rtol=0, atol=1e-5)

def test_fastai_distributed_imports():
    "With accelerate installed, `from fastai.distributed import *` works beside fast_cam, and fastai's `DistributedTrainer` gets accelerate's `Accelerator`"
    import accelerate, fastai.distributed
    ns = {}
    exec('from fastai.vision.all import *\nfrom fast_cam.all import *\nfrom fastai.distributed import *', ns)
    assert {'DistributedDL','DistributedTrainer','rank0_first'} <= ns.keys()
    assert fastai.distributed.Accelerator is accelerate.Accelerator  # imported in a `try` that passes when accelerate is missing
    assert hasattr(ns['Learner'], 'distrib_ctx') and hasattr(ns['Learner'], 'get_cams')
