"""`CAMCallback` in TensorBoard and Weights & Biases: images read back from each tracker's files, training untouched,
and neither tracker imported unless used."""
import io, os, sys, json, glob, time, pickle, struct, subprocess, textwrap, pytest, torch, numpy as np
from pathlib import Path
from PIL import Image
from fastai.vision.all import Learner, Callback, CancelFitException, accuracy, set_seed
from fast_cam.all import *

tb = pytest.importorskip('tensorboard')
from torch.utils.tensorboard import SummaryWriter
from fastai.callback.tensorboard import TensorBoardCallback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

@pytest.fixture(scope='module')
def shp(): return Shapes(200, size=32, seed=0)

def _learner(shp, seed=0):
    set_seed(seed, reproducible=True)
    return Learner(shp.dls(bs=32), shapes_cnn(4, nf=8), metrics=accuracy)

def _fit(learn, n_epoch=2, cbs=None):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(n_epoch, 1e-2, cbs=cbs)
    return learn

def _same_weights(a, b):
    sa,sb = a.model.state_dict(),b.model.state_dict()
    return sa.keys()==sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

def _tbcb(d): return TensorBoardCallback(d, trace_model=False, log_preds=False)

def _tb_images(d):
    "{tag: [(step, PIL image)]} read back by TensorBoard's own reader, every image kept"
    ea = EventAccumulator(str(d), size_guidance={'images': 0}).Reload()
    return {t: [(e.step, Image.open(io.BytesIO(e.encoded_image_string)), (e.width, e.height)) for e in ea.Images(t)]
            for t in ea.Tags()['images']}

def _check_tb(ims, h, steps, figsize, dpi):
    "Every item's tag, one image per recorded epoch at that step, `figsize`×`dpi` pixels, pixel for pixel the history's drawing"
    size = tuple(round(o*dpi) for o in figsize)
    assert sorted(ims)==h.tags==[f'fast_cam/gradcam/item_{i:02d}' for i in range(len(h.imgs))]
    assert h.epochs==steps
    for j,t in enumerate(h.tags):
        assert [s for s,_,_ in ims[t]]==steps
        for k,(s,im,wh) in enumerate(ims[t]):
            assert wh==size and im.size==size
            assert np.array_equal(np.asarray(im.convert('RGB')), np.asarray(h.images(k, figsize, dpi)[j]))

def test_tensorboard_callback(shp, tmp_path):
    "With fastai's `TensorBoardCallback`: items × epochs images in its event file, tagged per item, the epoch as step; weights as without"
    ref = _fit(_learner(shp), cbs=[_tbcb(tmp_path/'ref')])
    cb = CAMCallback(n=3, figsize=(2,1.5), dpi=50)
    l = _fit(_learner(shp), cbs=[_tbcb(tmp_path/'tb'), cb])
    assert _same_weights(l, ref)
    ims = _tb_images(tmp_path/'tb')
    assert sum(len(v) for v in ims.values())==3*3  # 3 items × (start + 2 epochs)
    _check_tb(ims, l.cam_history, [-1, 0, 1], (2,1.5), 50)
    assert _tb_images(tmp_path/'ref')=={}  # the reference run has no maps: the images above are the callback's

class _StopAfter0(Callback):
    order = 61  # a tracker's place, after `CAMCallback`
    def after_epoch(self):
        if self.epoch==0: raise CancelFitException()

def test_tensorboard_early_end(shp, tmp_path):
    "A fit ended early records its last epoch at `after_fit`, after `TensorBoardCallback` closed its writer: it still lands"
    tcb = _tbcb(tmp_path)
    l = _fit(_learner(shp), n_epoch=3, cbs=[tcb, CAMCallback(n=2, every=2, figsize=(1,1), dpi=40), _StopAfter0()])
    _check_tb(_tb_images(tmp_path), l.cam_history, [-1, 0], (1,1), 40)
    assert tcb.writer.all_writers is None  # closed again: no open file left behind

def test_summary_writer(shp, tmp_path):
    "A `SummaryWriter` passed as `writer`: written each record and flushed (readable while open), left open; not pickled"
    w = SummaryWriter(tmp_path)
    cb = CAMCallback(n=2, every=2, writer=w, figsize=(1,1), dpi=40)
    l = _fit(_learner(shp), n_epoch=3, cbs=cb)
    _check_tb(_tb_images(tmp_path), l.cam_history, [-1, 1, 2], (1,1), 40)
    assert w.all_writers is not None  # the user's writer stays open
    w.add_scalar('after', 1., 0); w.close()
    cb2 = pickle.loads(pickle.dumps(cb))  # the writer (open files) is not pickled; the history is
    assert cb2._writer is None and cb2.tensorboard and cb2.history.epochs==[-1, 1, 2]

def test_writer_false(shp, tmp_path):
    "`writer=False` keeps the maps out of a `TensorBoardCallback`'s event file"
    _fit(_learner(shp), n_epoch=1, cbs=[_tbcb(tmp_path), CAMCallback(n=2, writer=False)])
    assert _tb_images(tmp_path)=={}

@pytest.mark.parametrize('w', ['runs', True, 1, object()])
def test_bad_writer(w):
    with pytest.raises(CAMError, match='`writer` must be a TensorBoard `SummaryWriter`'): CAMCallback(writer=w)

@pytest.mark.parametrize('w', ['yes', 1, 'offline'])
def test_bad_wandb(w):
    with pytest.raises(CAMError, match='`wandb` must be None'): CAMCallback(wandb=w)

# W&B, offline: the run directory is read back

def _wandb_records(fn, bs=32768):
    "The records of a run's `.wandb` file, decoded with W&B's own protobuf schema (a LevelDB log after a 7-byte header)"
    from wandb.proto import wandb_internal_pb2 as pb
    d,i,buf = Path(fn).read_bytes(),7,b''
    assert d[:4]==b':W&B'
    while i+7<=len(d):
        if bs-i%bs<7: i += bs-i%bs; continue  # a block's tail too short for a header is padding
        _,n,t = struct.unpack('<IHB', d[i:i+7]); i += 7
        if t==0 and n==0: break
        buf += d[i:i+n]; i += n
        if t in (1,4): r = pb.Record(); r.ParseFromString(buf); buf = b''; yield r  # FULL or LAST fragment

def _wandb_history(run_dir, timeout=30):
    "The history rows of a finished offline run: {key: value} per row, flat keys ('a/b' for nested)"
    fn,t0 = glob.glob(f'{run_dir}/run-*.wandb')[0],time.time()
    # W&B's service writes the log after `finish` returns: wait for the run's exit record
    while not any(r.WhichOneof('record_type')=='exit' for r in _wandb_records(fn)):
        if time.time()-t0>timeout: raise TimeoutError(f'{fn} has no exit record after {timeout}s')
        time.sleep(.1)
    return [{(it.key or '/'.join(it.nested_key)): json.loads(it.value_json) for it in r.history.item}
            for r in _wandb_records(fn) if r.WhichOneof('record_type')=='history']

def _maps_in(rows, tags):
    "(fast_cam/epoch, W&B step, {tag: image record}) for each row holding maps"
    return [(r['fast_cam/epoch'], r['_step'], {t: {k.split('/')[-1]:v for k,v in r.items() if k.startswith(t+'/')}
                                                 for t in tags}) for r in rows if 'fast_cam/epoch' in r]

@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    wandb = pytest.importorskip('wandb')
    env = dict(WANDB_MODE='offline', WANDB_SILENT='true', WANDB_CONSOLE='off', WANDB_DIR=str(tmp_path),
               WANDB_CACHE_DIR=str(tmp_path/'cache'), WANDB_CONFIG_DIR=str(tmp_path/'config'),
               WANDB_DATA_DIR=str(tmp_path/'data'))
    for k,v in env.items(): monkeypatch.setenv(k, v)
    import fastai.callback.wandb as fw
    # fastai 2.8.12's `WandbCallback` fails in `before_fit` on a config value without `__dict__` (an int: fastai#4173)
    orig = fw._format_config_value
    def _fcv(v):
        try: return orig(v)
        except TypeError: return v
    monkeypatch.setattr(fw, '_format_config_value', _fcv)
    yield wandb
    if wandb.run is not None: wandb.run.finish()

def _run_dir(run): return Path(run.dir).parent  # `run.dir` is the run's `files/`

def _check_wandb(run_dir, h, epochs, size, commit):
    tags = h.tags
    rows = _wandb_history(run_dir)
    got = _maps_in(rows, tags)
    assert [e for e,_,_ in got]==epochs==h.epochs
    steps = [s for _,s,_ in got]
    assert steps==sorted(set(steps))  # one W&B step per record, increasing
    if commit: assert steps==list(range(len(epochs)))  # a bare run: each record is a step
    for _,s,its in got:
        for t in tags:
            r = its[t]
            assert r['_type']=='image-file' and (r['width'], r['height'])==size
            fn = run_dir/'files'/r['path']
            assert fn.exists() and Image.open(fn).size==size
            assert r['path'].startswith(f'media/images/{t}_{s}_')  # W&B's file name: tag, step, hash
    pngs = glob.glob(f'{run_dir}/files/media/images/fast_cam/gradcam/*.png')
    assert len(pngs)==len(tags)*len(epochs)
    return rows

def test_wandb_callback(shp, wandb_env):
    "With fastai's `WandbCallback`: a `wandb.Image` per item and epoch in the offline run, at its steps; weights as without"
    from fastai.callback.wandb import WandbCallback
    run = wandb_env.init(project='fast_cam_test')
    cb = CAMCallback(n=3, figsize=(1.2,1), dpi=50)
    l = _fit(_learner(shp), cbs=[WandbCallback(log_preds=False), cb])
    ref = _fit(_learner(shp), cbs=[WandbCallback(log_preds=False)])
    rd = _run_dir(run); run.finish()
    assert _same_weights(l, ref)
    rows = _check_wandb(rd, l.cam_history, [-1, 0, 1], (60, 50), commit=False)
    # the maps joined `WandbCallback`'s rows: the first batch's (step 0) and each epoch's last (with its 'epoch')
    got = [r for r in rows if 'fast_cam/epoch' in r]
    assert 'train_loss' in got[0] and all(r.get('epoch')==e+1 for r,e in zip(got[1:], (0, 1)))

def test_wandb_run(shp, wandb_env):
    "`wandb=True` with an active run and no `WandbCallback`: one W&B step per record; without a run, an error before training"
    run = wandb_env.init(project='fast_cam_test')
    l = _fit(_learner(shp), cbs=CAMCallback(n=2, wandb=True, figsize=(1,1), dpi=40))
    rd = _run_dir(run); run.finish()
    _check_wandb(rd, l.cam_history, [-1, 0, 1], (40, 40), commit=True)
    l = _learner(shp)
    w0 = {k:v.clone() for k,v in l.model.state_dict().items()}
    with pytest.raises(CAMError, match=r'wandb.init'): _fit(l, cbs=CAMCallback(n=2, wandb=True))
    assert all(torch.equal(w0[k], v) for k,v in l.model.state_dict().items())  # refused before any training step

_blocked = textwrap.dedent('''
    import sys, importlib.abc
    tried = []
    names = ('tensorboard', 'tensorboardX', 'torch.utils.tensorboard', 'wandb', 'fastai.callback.tensorboard',
             'fastai.callback.wandb')
    class Block(importlib.abc.MetaPathFinder):
        "Record and refuse every import of a tracker: as if none were installed"
        def find_spec(self, name, path, target=None):
            if any(name==n or name.startswith(n+'.') for n in names): tried.append(name); raise ImportError(name)
    sys.meta_path.insert(0, Block())
    from fastai.vision.all import *  # timm looks for wandb on its own: not fast_cam's doing
    del tried[:]
    from fast_cam.all import *
    set_seed(0)
    learn = Learner(Shapes(64, size=32, seed=0).dls(bs=16), shapes_cnn(4, nf=8))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=CAMCallback(n=2))
    assert learn.cam_history.epochs==[-1, 0]
    print('TRIED', tried)
    print('LOADED', sorted(m for m in sys.modules if any(m==n or m.startswith(n+'.') for n in names)))
    try: import tensorboard
    except ImportError: pass
    assert tried==['tensorboard'], tried  # the blocker does see an import
    try: learn.fit(1, cbs=CAMCallback(n=2, wandb=True)); raise SystemExit('no error')
    except CAMError as e: assert 'pip install wandb' in str(e), e
''')

def test_trackers_not_imported():
    "fast_cam imports no tracker unless one is used, and trains with `CAMCallback` where none is installed"
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-c', _blocked], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode==0, r.stderr[-2000:]
    assert 'TRIED []' in r.stdout and 'LOADED []' in r.stdout, r.stdout
