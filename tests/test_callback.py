"`fast_cam.callback`: `CAMCallback` and `CAMHistory`: training untouched (bit-identical weights), the history, its figures and files."
import copy, tempfile, pytest, torch, numpy as np
from pathlib import Path
from PIL import Image
from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, RandomSplitter, FlipItem, Brightness, Normalize, imagenet_stats,
                               Learner, Callback, CancelFitException, Flatten, nn, accuracy, set_seed, get_random_states, load_learner)
from fast_cam.all import *
from conftest import hooks_of, snapshot, assert_same

@pytest.fixture(scope='module')
def shp(): return Shapes(200, seed=0)

def _learner(shp, seed=0):
    "A fresh learner whose training draws from every generator: shuffling, a random flip (`random`), random brightness and dropout (torch)"
    set_seed(seed, reproducible=True)
    db = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=shp.vocab)), get_x=ShapesImage(shp), get_y=ShapesLabel(shp),
                   splitter=RandomSplitter(.2, seed=42), item_tfms=FlipItem(.5), batch_tfms=[Brightness(max_lighting=.3, p=.5), Normalize.from_stats(*imagenet_stats)])
    dls = db.dataloaders(list(range(len(shp))), bs=32, num_workers=0)
    dls.shapes = shp
    m = shapes_cnn(4, nf=16)
    m[1] = nn.Sequential(nn.AdaptiveAvgPool2d(1), Flatten(), nn.Dropout(.3), nn.Linear(64, 4))
    return Learner(dls, m, metrics=accuracy)

def _fit(learn, n_epoch=2, cbs=None):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(n_epoch, 1e-2, cbs=cbs)
    return learn

def _same_tree(a, b):
    "Nested dicts/lists/tensors equal, tensors bit for bit"
    if isinstance(a, torch.Tensor): return isinstance(b, torch.Tensor) and a.shape==b.shape and torch.equal(a, b)
    if isinstance(a, dict): return isinstance(b, dict) and a.keys()==b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list,tuple)): return len(a)==len(b) and all(_same_tree(x, y) for x,y in zip(a, b))
    return a==b

def _same_training(a, b):
    "Same weights, BatchNorm buffers (incl. `num_batches_tracked`), optimizer state and recorded losses"
    sa,sb = a.model.state_dict(),b.model.state_dict()
    assert sa.keys()==sb.keys()
    return (all(torch.equal(sa[k], sb[k]) for k in sa) and _same_tree(a.opt.state_dict()['state'], b.opt.state_dict()['state'])
            and _same_tree([float(o) for o in a.recorder.losses], [float(o) for o in b.recorder.losses]))

class _LeakyCAMCallback(CAMCallback):
    "A CAMCallback that draws one number from torch's generator after each epoch, as a careless callback would"
    def after_epoch(self):
        super().after_epoch()
        torch.rand(1)

@pytest.fixture(scope='module')
def reference(shp): return _fit(_learner(shp))

def test_training_bit_identical(shp, reference):
    "Training with the callback (recording every epoch, and at the start) gives bit-identical weights, BN buffers and optimizer state"
    cb = CAMCallback(n=4, every=1)
    l = _fit(_learner(shp), cbs=cb)
    assert _same_training(l, reference)
    assert l.cam_history.epochs==[-1, 0, 1]
    assert 'num_batches_tracked' in ''.join(l.model.state_dict()) and l.model[0][0][1].num_batches_tracked>0
    assert hooks_of(l.model)==[]

def test_identity_check_is_sensitive(shp, reference):
    "The comparison above would catch a callback that consumes random numbers, or a forward pass in train mode"
    assert not _same_training(_fit(_learner(shp), cbs=_LeakyCAMCallback()), reference)
    class _TrainModeCallback(CAMCallback):
        def after_epoch(self):
            super().after_epoch()
            with torch.no_grad(): self.learn.model.train()(self.xs)  # moves the BatchNorm statistics
    assert not _same_training(_fit(_learner(shp), cbs=_TrainModeCallback()), reference)

def test_state_around_each_event(shp):
    "Around the callback's own events: model state, grads, modes, hooks, grad mode, every RNG and the optimizer are as before"
    seen = []
    class Before(Callback):
        order = CAMCallback.order-1
        def before_train(self): self.s = (snapshot(self.model), get_random_states(), copy.deepcopy(self.opt.state_dict()))
        after_epoch = before_train
    class After(Callback):
        order = CAMCallback.order+1
        def _check(self):
            s,rs,opt = self.learn.before.s
            assert_same(self.model, s)
            r2 = get_random_states()
            assert r2['random_state']==rs['random_state'] and torch.equal(r2['torch_state'], rs['torch_state'])
            assert all(np.array_equal(a, b) for a,b in zip(r2['numpy_state'], rs['numpy_state']))
            assert _same_tree(self.opt.state_dict()['state'], opt['state'])
            seen.append(self.learn.training)
        before_train = after_epoch = _check
    l = _learner(shp)
    _fit(l, 2, cbs=[Before(), CAMCallback(n=3), After()])
    assert seen==[True, False, True, False]  # checked in train mode (before_train) and in eval mode (after_epoch), twice
    assert len(l.cam_history)==3

def test_history_shapes_every(shp):
    "every=2 over 3 epochs records the start, epoch 1, and the last one; shapes [epochs, items, ...]"
    l = _fit(_learner(shp), 3, cbs=CAMCallback(n=3, every=2))
    h = l.cam_history
    assert h.epochs==[-1, 1, 2]
    assert h.maps.shape==(3, 3, 8, 8) and h.maps.dtype==torch.float32 and h.maps.device.type=='cpu'
    assert h.probs.shape==(3, 3, 4)
    torch.testing.assert_close(h.probs.sum(-1), torch.ones(3, 3))
    assert torch.equal(h.targets, h.preds)
    assert torch.equal(h.targs, torch.tensor([shp.labels[i] for i in l.dls.valid.items[:3]]))
    assert h.imgs.shape==(3, 3, 64, 64) and h.imgs.dtype==torch.uint8
    ref = torch.from_numpy(shp.images[list(l.dls.valid.items[:3])]).int()
    assert (h.imgs.permute(0,2,3,1).int()-ref).abs().max()<=1  # decoded: the original images, up to rounding

def test_last_record_equals_heatmap(shp):
    "The record after the last epoch holds exactly `learn.heatmap` of the fixed items with the final weights"
    cb = CAMCallback(n=4, method='gradcampp', target='label', at_start=False)
    l = _fit(_learner(shp), 1, cbs=cb)
    h = l.cam_history
    xb,yb = l.dls.test_dl(list(l.dls.valid.items[:4]), with_labels=True).one_batch()
    maps,probs = l.heatmap(xb, 'gradcampp', target=yb, with_preds=True)
    assert h.epochs==[0]
    torch.testing.assert_close(h.maps[0], maps.cpu(), rtol=0, atol=1e-6)
    torch.testing.assert_close(h.probs[0], probs.cpu(), rtol=0, atol=1e-6)
    assert torch.equal(h.targets[0], yb.cpu().as_subclass(torch.Tensor))

def test_early_stop_records_last_epoch(shp):
    "A fit stopped early by a tracker still records its last trained epoch, once"
    from fastai.callback.tracker import EarlyStoppingCallback
    class Stop(Callback):
        order = 60  # where the trackers run
        def after_epoch(self):
            if self.epoch==1: raise CancelFitException()
    l = _fit(_learner(shp), 4, cbs=[cb := CAMCallback(n=2, every=3), Stop()])
    assert cb.history.epochs==[-1, 1]
    l = _fit(_learner(shp), 4, cbs=[cb := CAMCallback(n=2, every=1), Stop()])
    assert cb.history.epochs==[-1, 0, 1]
    assert EarlyStoppingCallback.order>CAMCallback.order

def test_items_given(shp):
    "Given items (data set indices) bring labels; a tensor batch works without"
    l = _learner(shp)
    its = [l.dls.valid.items[5], l.dls.valid.items[9]]
    _fit(l, 1, cbs=(cb := CAMCallback(items=its)))
    assert list(cb.history.items)==its and cb.history.maps.shape==(2, 2, 8, 8)
    assert torch.equal(cb.history.targs, torch.tensor(shp.labels[its]))
    xb = l.dls.valid.one_batch()[0][:3]
    _fit(l, 1, cbs=(cb2 := CAMCallback(items=xb)))
    assert cb2.history.items is None and cb2.history.targs is None and cb2.history.maps.shape==(2, 3, 8, 8)
    with pytest.raises(TargetError, match='label'): _fit(l, 1, cbs=CAMCallback(items=xb, target='label'))

def test_paths_and_images(dls, cam_learn, files):
    "On an image-folder Learner: items as paths bring their labels; PIL images work without labels"
    cb,cb2 = CAMCallback(items=files),CAMCallback(items=[Image.open(f) for f in files[:2]])
    with cam_learn.no_bar(), cam_learn.no_logging(): cam_learn.fit(1, 1e-3, cbs=[cb, cb2])
    assert cb.history.targs.tolist()==[cam_learn.dls.vocab.o2i[f.parent.name] for f in files]
    assert cb.history.maps.shape==(2, len(files), 8, 8)
    assert cb2.history.targs is None and cb2.history.maps.shape==(2, 2, 8, 8)
    assert hooks_of(cam_learn.model)==[]

def test_nothing_outside_training(shp, tmp_path):
    "A callback left on the learner records nothing during validate, get_preds, get_cams or lr_find"
    l = _learner(shp)
    l.path = tmp_path  # lr_find saves the weights there
    cb = CAMCallback(n=2)
    l.add_cb(cb)
    w = {k:v.clone() for k,v in l.model.state_dict().items()}
    with l.no_bar(), l.no_logging():
        l.validate(); l.get_preds(); l.get_cams()
        l.lr_find(num_it=6, show_plot=False)
    assert cb.history is None and not hasattr(l, 'cam_history')
    assert all(torch.equal(w[k], v) for k,v in l.model.state_dict().items())
    _fit(l, 1)
    assert cb.history.epochs==[-1, 0]
    with l.no_bar(): l.validate()
    assert cb.history.epochs==[-1, 0]

def test_fine_tune_continues_or_resets(shp):
    "fine_tune is two fits: the history continues with a running epoch count; reset=True restarts it at each fit"
    l = _learner(shp)
    cb = CAMCallback(n=2)
    with l.no_bar(), l.no_logging(): l.fine_tune(1, freeze_epochs=1, cbs=cb)
    assert cb.history.epochs==[-1, 0, 1] and l.cam_history is cb.history
    _fit(l, 2, cbs=cb)
    assert cb.history.epochs==[-1, 0, 1, 2, 3]
    cb2 = CAMCallback(n=2, reset=True)
    h1 = _fit(l, 1, cbs=cb2).cam_history
    _fit(l, 1, cbs=cb2)
    assert h1.epochs==[-1, 0] and cb2.history is not h1 and cb2.history.epochs==[-1, 0]  # the second fit's start and epoch
    assert not torch.equal(cb2.history.maps[0], h1.maps[0])

def test_export(shp, tmp_path):
    "A learner with the callback attached exports and loads: the history travels, the fixed batch does not"
    l = _learner(shp)
    l.add_cb(CAMCallback(n=2))
    _fit(l, 1)
    l.export(tmp_path/'l.pkl')
    l2 = load_learner(tmp_path/'l.pkl')
    assert isinstance(l2.cam_callback, CAMCallback) and l2.cam_callback.xs is None and 'xs' not in l2.cam_callback.__dict__
    assert l2.cam_history.epochs==[-1, 0]
    assert torch.equal(l2.cam_history.maps, l.cam_history.maps) and l2.cam_callback.history is l2.cam_history
    with l.no_bar(), l.no_logging(): l.fit(1)  # the original still trains and records after the export
    assert l.cam_history.epochs==[-1, 0, 1]

def test_show_and_files(shp, tmp_path):
    l = _fit(_learner(shp), 2, cbs=(cb := CAMCallback(n=3)))
    axs = cb.show()
    assert len(axs)==9 and all(a.images for a in axs)
    ttl = [a.get_title() for a in axs]
    assert all(t.split()[0] in shp.vocab for t in ttl)
    assert len(cb.show(epochs=[-1, 1]))==6
    with pytest.raises(CAMError, match='recorded epochs'): cb.show(epochs=7)
    gif,png = cb.save_gif(tmp_path/'a.gif'),cb.save_strip(tmp_path/'a.png', epochs=[0, 1])
    g = Image.open(gif)
    assert g.format=='GIF' and g.n_frames==3
    frames = []
    for i in range(g.n_frames): g.seek(i); frames.append(np.asarray(g.convert('RGB')))
    assert not np.array_equal(frames[0], frames[-1])
    p,q = Image.open(png),Image.open(cb.save_strip(tmp_path/'all.png'))
    assert p.format==q.format=='PNG' and q.size[1]>p.size[1]*1.3  # three rows against two
    import matplotlib.pyplot as plt
    n = len(plt.get_fignums())
    cb.save_gif(tmp_path/'b.gif'); cb.save_strip(tmp_path/'b.png')
    assert len(plt.get_fignums())==n  # drawn outside pyplot
    plt.close('all')

def test_other_methods_in_history(shp, tmp_path):
    "Guided backprop records [epochs, items, c, H, W] and draws with show_guided; CAM with an int target explains that class"
    l = _learner(shp)
    _fit(l, 1, cbs=(cb := CAMCallback(n=2, method='guided_backprop')))
    assert cb.history.maps.shape==(2, 2, 3, 64, 64)
    assert len(cb.show())==4 and Image.open(cb.save_gif(tmp_path/'g.gif')).n_frames==2
    _fit(l, 1, cbs=(cb2 := CAMCallback(n=2, method='eigencam', target='square')))
    assert cb2.history.maps.shape==(2, 2, 8, 8) and (cb2.history.targets==2).all()
    import matplotlib.pyplot as plt; plt.close('all')

def test_shared_scale(shp, monkeypatch):
    "shared=True: each item's maps are drawn against one scale, its largest map over the epochs; shared=False: each map's own"
    h = _fit(_learner(shp), 2, cbs=CAMCallback(n=2)).cam_history
    import fast_cam.show as fcs, matplotlib.pyplot as plt
    calls = []
    def spy(img, hm, **kwargs):
        calls.append((hm, kwargs['vmax']))
        return show_heatmap(img, hm, **kwargs)
    monkeypatch.setattr(fcs, 'show_heatmap', spy)  # `CAMHistory` draws through `fast_cam.show`
    h.show(shared=True)
    assert [torch.equal(hm, h.maps[e,i]) for (hm,_),(e,i) in zip(calls, [(e,i) for e in range(3) for i in range(2)])]==[True]*6
    vm = h.maps.flatten(2).amax((0,2))
    assert vm.min()>0 and [v for _,v in calls]==vm.tolist()*3
    calls.clear(); h.show(shared=False)
    assert [v for _,v in calls]==[None]*6
    calls.clear(); h.save_gif(Path(tempfile.mkdtemp())/'a.gif', epochs=[0,1])
    assert [v for _,v in calls]==h.maps[1:].flatten(2).amax((0,2)).tolist()*2  # the scale of the epochs drawn
    plt.close('all')

def test_bad_arguments(shp):
    with pytest.raises(CAMError, match='every'): CAMCallback(every=0)
    with pytest.raises(CAMError, match='every'): CAMCallback(every=1.5)
    with pytest.raises(CAMError, match='`n`'): CAMCallback(n=0)
    with pytest.raises(CAMError, match="Did you mean 'gradcam'"): CAMCallback(method='gradcan')
    l = _learner(shp)
    s = snapshot(l.model)
    with pytest.raises(InputError, match='validation set has 40'): _fit(l, 1, cbs=CAMCallback(n=41))
    with pytest.raises(LayerError, match='no module named'): _fit(l, 1, cbs=CAMCallback(layer='body.9'))
    with pytest.raises(TargetError, match='out of range'): _fit(l, 1, cbs=CAMCallback(target=7))
    assert hooks_of(l.model)==[]
    assert_same(l.model, s)  # each failed before the first training step
    with pytest.raises(CAMError, match='train with'): CAMCallback().show()
    with pytest.raises(TargetError, match='all'): CAMCallback(method='cam', target='all')
