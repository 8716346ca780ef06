"`fast_cam.gather`: `learn.get_cams` over whole data sets: equal to `learn.heatmap`, files and manifests, resume after an interruption, and 2-process jobs under `torchrun` and `accelerate launch`."
import os, sys, json, socket, subprocess, textwrap, pytest, torch, numpy as np, pandas as pd
from pathlib import Path
from PIL import Image
from fastai.vision.all import Callback, PILImage, get_image_files
from fast_cam.all import *
from conftest import hooks_of, snapshot, assert_same, load_quiet, manifest_parts, kill_when, KILLED

def test_get_cams_equals_heatmap(slearn):
    "Batch by batch equal to learn.heatmap (1e-5) over a DataLoader whose length is not a multiple of the batch size; under no_bar"
    l = slearn
    dl = l.dls.test_dl(list(l.dls.valid.items[:45]), with_labels=True, bs=16)
    s = snapshot(l.model)
    with l.no_bar(): maps,preds,targs = l.get_cams(dl)
    assert_same(l.model, s)
    assert maps.shape==(45, 8, 8) and maps.device.type=='cpu' and maps.amax()>0
    ref = torch.cat([l.heatmap(xb) for xb,_ in dl]).cpu()
    torch.testing.assert_close(maps, ref, rtol=0, atol=1e-5)
    p,t = l.get_preds(dl=dl)
    torch.testing.assert_close(preds, p); assert torch.equal(targs, t)
    assert l.get_cams(dl, with_preds=False).shape==(45, 8, 8)

def test_get_cams_other_methods_and_targets(slearn):
    l = slearn
    dl = l.dls.test_dl(list(l.dls.valid.items[:20]), with_labels=True, bs=8)
    xb,yb = zip(*dl)
    with l.no_bar():
        m,_,t = l.get_cams(dl, method='cam', target='label')
        torch.testing.assert_close(m, torch.cat([l.cam(x, target=y) for x,y in zip(xb,yb)]).cpu(), rtol=0, atol=1e-5)
        tg = torch.arange(20)%4
        m = l.get_cams(dl, target=tg, with_preds=False)
        torch.testing.assert_close(m, torch.cat([l.gradcam(x, target=tg[i*8:i*8+len(x)]) for i,x in enumerate(xb)]).cpu(), rtol=0, atol=1e-5)
        assert torch.equal(l.get_cams(dl, target='square', with_preds=False), l.get_cams(dl, target=2, with_preds=False))
        assert l.get_cams(dl, size='input', with_preds=False).shape==(20, 64, 64)
        assert l.get_cams(dl, size=(16, 24), with_preds=False).shape==(20, 16, 24)
        assert l.get_cams(dl, method='guided_backprop', with_preds=False).shape==(20, 3, 64, 64)
        allc = l.get_cams(dl, method='cam', target='all', with_preds=False)
        assert allc.shape==(20, 4, 8, 8)
        torch.testing.assert_close(allc[:,2], l.get_cams(dl, method='cam', target=2, with_preds=False), rtol=0, atol=1e-5)

def test_get_cams_data_set_order(slearn):
    "A shuffled DataLoader gives the maps in data set order, like get_preds"
    l = slearn
    dl = l.dls.test_dl(list(l.dls.valid.items[:30]), with_labels=True, bs=8)
    with l.no_bar():
        m1,p1,t1 = l.get_cams(dl)
        m2,p2,t2 = l.get_cams(dl.new(shuffle=True))
    torch.testing.assert_close(m1, m2, rtol=0, atol=1e-5); assert torch.equal(t1, t2)

def test_get_cams_default_valid(slearn):
    "dl=None: the whole validation set, in order; the peaks mostly fall on the shapes of the trained model"
    l = slearn
    with l.no_bar(): maps,preds,targs = l.get_cams()
    items = l.dls.valid.items
    assert maps.shape==(len(items), 8, 8)
    assert torch.equal(targs, torch.tensor(l.dls.shapes.labels[items]))
    masks = torch.from_numpy(l.dls.shapes.masks[items])
    pim = pointing_game(maps, masks).mean()
    # maps paired with the wrong items (one place off) would score about the shapes' share of the image
    assert pim > 0.6 and pim > pointing_game(maps.roll(1, 0), masks).mean() + 0.3

def test_get_cams_files(slearn, tmp_path):
    "out= writes {idx}.npy maps equal to the returned ones, PNG overlays and a manifest with the items, labels and predictions"
    l = slearn
    its = list(l.dls.valid.items[:10])
    dl = l.dls.test_dl(its, with_labels=True, bs=4)
    with l.no_bar(): maps,preds,targs = l.get_cams(dl, target='label', out=tmp_path/'o', overlays=True, figsize=(2,2))
    mf = pd.read_csv(tmp_path/'o'/'manifest.csv')
    v = l.dls.vocab
    assert list(mf.columns)==['idx','item','actual','predicted','probability','explained','map','overlay']
    assert list(mf.idx)==list(range(10)) and list(mf.item)==[int(i) for i in its]
    assert list(mf.actual)==[v[int(i)] for i in targs] and list(mf.explained)==list(mf.actual)
    assert list(mf.predicted)==[v[int(i)] for i in preds.argmax(1)]
    np.testing.assert_allclose(mf.probability, preds.max(1).values.numpy(), atol=1e-5)
    for r in mf.itertuples():
        np.testing.assert_array_equal(np.load(tmp_path/'o'/r.map), maps[r.idx].numpy())
        im = Image.open(tmp_path/'o'/r.overlay); assert im.format=='PNG' and min(im.size)>50
    # without overlays: maps and manifest only
    with l.no_bar(): l.get_cams(dl, out=tmp_path/'p')
    assert len(list((tmp_path/'p').glob('*.png')))==0 and len(list((tmp_path/'p').glob('*.npy')))==10
    assert pd.read_csv(tmp_path/'p'/'manifest.csv').overlay.isna().all()

def test_get_cams_paths_manifest(cam_learn, tmp_path):
    "On an image-folder Learner the manifest names each item by its path"
    dl = cam_learn.dls.valid
    with cam_learn.no_bar(): maps,preds,targs = cam_learn.get_cams(out=tmp_path)
    mf = pd.read_csv(tmp_path/'manifest.csv')
    assert list(mf.item)==[str(o) for o in dl.items] and maps.shape==(len(dl.items), 8, 8)
    assert hooks_of(cam_learn.model)==[]

def test_get_cams_errors_leave_state(slearn):
    l = slearn
    dl = l.dls.test_dl(list(l.dls.valid.items[:10]), with_labels=True, bs=4)
    s = snapshot(l.model)
    with l.no_bar():
        with pytest.raises(LayerError): l.get_cams(dl, layer='0.9')
        with pytest.raises(TargetError, match='3 targets for a DataLoader of 10'): l.get_cams(dl, target=[0,1,2])
        with pytest.raises(TargetError, match='no labels'): l.get_cams(l.dls.test_dl(list(l.dls.valid.items[:4])), target='label')
        with pytest.raises(CAMError, match='Unknown method'): l.get_cams(dl, method='nope')
        with pytest.raises(CAMError, match='size'): l.get_cams(dl, size='big')
        with pytest.raises(CAMError, match='out='): l.get_cams(dl, overlays=True)
    assert_same(l.model, s)
    assert not any(isinstance(c, GatherCAMsCallback) for c in l.cbs) and not hasattr(l, 'gather_cams')
    # an unlabelled test set: maps and predictions, no targets
    with l.no_bar(): maps,preds,targs = l.get_cams(l.dls.test_dl(list(l.dls.shapes.images[:5])))
    assert maps.shape==(5, 8, 8) and targs is None

# ---- get_cams(out=..., resume=True): an interrupted run picks up where it stopped

@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    "An exported learner and 48 PNG files of the synthetic shapes, with the maps of one uninterrupted run"
    d = tmp_path_factory.mktemp('resume')
    learn = shapes_learner(n=200, epochs=0, seed=1)
    learn.export(d/'learner.pkl')
    (d/'imgs').mkdir()
    for i in range(48): PILImage.create(learn.dls.shapes.images[i]).save(d/'imgs'/f'{i:03d}.png')
    l = load_quiet(d/'learner.pkl')
    with l.no_bar(): ref = l.get_cams(l.dls.test_dl(get_image_files(d/'imgs').sorted(), bs=4), with_preds=False)
    return d, ref

def _check_resumed(o, ref, attrs, done):
    "Each item once in the manifest, the missing ones computed and no more, every map whole and equal to the uninterrupted run's"
    n = len(ref)
    assert attrs=={'computed': n-len(done), 'kept': len(done)}, attrs
    mf = pd.read_csv(o/'manifest.csv')
    assert mf.idx.tolist()==list(range(n)), 'every item exactly once, in data set order'
    assert sorted(p.name for p in o.glob('*.npy'))==sorted(mf['map']) and len(mf['map'].unique())==n
    for r in mf.itertuples(): np.testing.assert_allclose(np.load(o/r.map), ref[r.idx].numpy(), rtol=0, atol=1e-5)
    assert not list(o.glob('manifest.part*')) and not list(o.glob('.*.tmp'))

def test_get_cams_resume_after_kill(exported, tmp_path):
    "A run killed with SIGKILL part-way, started again with resume=True, computes only the items the first run did not finish"
    import os, sys, json
    d,ref = exported
    (tmp_path/'run.py').write_text(KILLED)
    o = tmp_path/'out'
    cmd = lambda delay, res: [sys.executable, str(tmp_path/'run.py'), str(d/'learner.pkl'), str(d/'imgs'), str(o), str(tmp_path/res), str(delay)]
    env = {**os.environ, 'OMP_NUM_THREADS':'1', 'MPLBACKEND':'Agg'}
    kill_when(cmd(0.3, 'killed.json'), lambda: len(list(o.glob('manifest.part*.csv')))>=3, env)
    done = manifest_parts(o)
    assert 12<=len(done)<48 and len(list(o.glob('*.npy')))>=len(done)
    print(f'\nkill -9: {len(ref)} items, {len(done)} finished before the kill ({len(list(o.glob("*.npy")))} maps on disk)')
    import subprocess
    r = subprocess.run(cmd(0, 'resumed.json'), capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode==0, r.stderr[-3000:]
    attrs = json.loads((tmp_path/'resumed.json.0').read_text())
    print(f'resumed: {attrs}')
    _check_resumed(o, ref, attrs, done)

class _Interrupt(Callback):
    "Ctrl-C after `k` batches"
    order = 100
    def __init__(self, k): self.k,self.i = k,0
    def after_batch(self):
        self.i += 1
        if self.i==self.k: raise KeyboardInterrupt

def test_get_cams_resume_after_keyboard_interrupt(exported, tmp_path):
    "Ctrl-C after 3 batches: the 12 finished items are kept, the other 36 computed; the model is left as it was"
    d,ref = exported
    l = load_quiet(d/'learner.pkl')
    dl = l.dls.test_dl(get_image_files(d/'imgs').sorted(), bs=4)
    o,s = tmp_path/'out',snapshot(l.model)
    with l.no_bar():
        with pytest.raises(KeyboardInterrupt), l.added_cbs(_Interrupt(3)): l.get_cams(dl, out=o, with_preds=False)
        assert_same(l.model, s)
        done = manifest_parts(o)
        assert done==list(range(12)) and len(list(o.glob('*.npy')))==12
        man = l.get_cams(dl, out=o, with_preds=False, resume=True)
        _check_resumed(o, ref, man.attrs, done)
        assert len(man)==48
        again = l.get_cams(dl, out=o, with_preds=False, resume=True)  # nothing left to do
    assert again.attrs=={'computed': 0, 'kept': 48} and again.equals(man)
    assert_same(l.model, s)

def test_get_cams_resume_half_written(exported, tmp_path, monkeypatch):
    "A map cut off mid-write is never read as done: the write goes to a temporary file and `os.replace`; a map spoiled on disk is recomputed"
    d,ref = exported
    l = load_quiet(d/'learner.pkl')
    dl = l.dls.test_dl(get_image_files(d/'imgs').sorted(), bs=4)
    o = tmp_path/'out'
    save,calls = np.save,[]
    def half_save(f, a, *args, **kwargs):
        calls.append(1)
        if len(calls)==10:  # the 10th map: half its bytes, then Ctrl-C
            f.write(b'\x93NUMPY'); raise KeyboardInterrupt
        save(f, a, *args, **kwargs)
    monkeypatch.setattr(np, 'save', half_save)
    with l.no_bar(), pytest.raises(KeyboardInterrupt): l.get_cams(dl, out=o, with_preds=False)
    monkeypatch.setattr(np, 'save', save)
    assert len(list(o.glob('*.npy')))==9 and not list(o.glob('.*')), 'no half-written map under its name, no temporary file left'
    assert manifest_parts(o)==list(range(8))  # the batch of the 10th map has no manifest rows
    (o/'.00020_020.npy.tmp').write_bytes(b'\x93NUMPY')  # what a kill -9 mid-write leaves
    with l.no_bar(): man = l.get_cams(dl, out=o, with_preds=False, resume=True)
    _check_resumed(o, ref, man.attrs, list(range(8)))
    (o/'00003_003.npy').write_bytes((o/'00003_003.npy').read_bytes()[:100])  # spoiled after the fact
    (o/'00005_005.npy').unlink()
    with l.no_bar(): man = l.get_cams(dl, out=o, with_preds=False, resume=True)
    assert man.attrs=={'computed': 2, 'kept': 46}
    _check_resumed(o, ref, man.attrs, [i for i in range(48) if i not in (3,5)])

def test_get_cams_without_resume(exported, tmp_path):
    "resume=False (the default) computes every item again, rewrites the manifest and drops what an interrupted run left; overlays are resumed too"
    d,ref = exported
    l = load_quiet(d/'learner.pkl')
    files = get_image_files(d/'imgs').sorted()
    dl = l.dls.test_dl(files, bs=4)
    o = tmp_path/'out'
    with l.no_bar():
        with pytest.raises(KeyboardInterrupt), l.added_cbs(_Interrupt(2)): l.get_cams(dl, out=o, with_preds=False)
        man = l.get_cams(dl, out=o, with_preds=False)
        assert man.attrs=={'computed': 48, 'kept': 0} and man.idx.tolist()==list(range(48))
        assert not list(o.glob('manifest.part*'))
        # a manifest written without overlays does not count as done when overlays are asked for
        dl2 = l.dls.test_dl(files[:6], bs=4)
        with pytest.raises(KeyboardInterrupt), l.added_cbs(_Interrupt(1)): l.get_cams(dl2, out=tmp_path/'ov', overlays=True, with_preds=False, figsize=(1,1))
        man = l.get_cams(dl2, out=tmp_path/'ov', overlays=True, with_preds=False, resume=True, figsize=(1,1))
        assert man.attrs=={'computed': 2, 'kept': 4} and len(list((tmp_path/'ov').glob('*.png')))==6
        # other items in the same folder now: a row for a different file at the same index is not kept
        dl3 = l.dls.test_dl(files[10:16], bs=4)
        man = l.get_cams(dl3, out=tmp_path/'ov', with_preds=False, resume=True)
        assert man.attrs=={'computed': 6, 'kept': 0} and [Path(p).name for p in man['item']]==[f.name for f in files[10:16]]
        with pytest.raises(CAMError, match='with_preds=False'): l.get_cams(dl, out=o, resume=True)
        with pytest.raises(CAMError, match='out='): l.get_cams(dl, with_preds=False, resume=True)

# ---- 2-process jobs on CPU (gloo), by `torchrun` and by `accelerate launch`: each item once, one merged manifest,
# maps equal to one process'; a job killed part-way and resumed

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
