"Shared fixtures and helpers, with no downloads: shape images and learners on them, the `Shapes` models, small models and inputs, state snapshots, the peers' raw maps, and a `get_cams` run to kill part-way."
import copy, warnings, pytest, torch, numpy as np
import torchvision.models as tvm
from pathlib import Path
from PIL import Image, ImageDraw
from fastai.vision.all import ImageDataLoaders, Resize, get_image_files, vision_learner, resnet18, nn
from fast_cam.all import *

warnings.filterwarnings('ignore', message='.*torch.jit.script.*')

def make_shapes(path, n=8, sz=48):
    "A folder `path/{circle,square}/i.png` of small synthetic images"
    for lbl in ('circle','square'):
        (path/lbl).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            im = Image.new('RGB', (sz,sz), (20,20+5*i,20)); d = ImageDraw.Draw(im)
            x0,y0 = 4+2*i, 6+2*i
            (d.ellipse if lbl=='circle' else d.rectangle)([x0,y0,x0+18,y0+18], fill=(230,200-10*i,40))
            im.save(path/lbl/f'{i}.png')
    return path

@pytest.fixture(scope='session')
def shapes(tmp_path_factory): return make_shapes(tmp_path_factory.mktemp('shapes'))

@pytest.fixture(scope='session')
def dls(shapes):
    return ImageDataLoaders.from_folder(shapes, valid_pct=0.25, seed=0, item_tfms=Resize(64), bs=4, num_workers=0)

@pytest.fixture(scope='session')
def files(shapes): return get_image_files(shapes).sorted()[::3][:4]

def _randomise_bn(m):
    "Give every BatchNorm non-trivial statistics, as after training, so BN folding is really exercised"
    torch.manual_seed(0)
    for o in m.modules():
        if isinstance(o, (nn.BatchNorm1d, nn.BatchNorm2d)):
            o.running_mean.normal_(0, .2); o.running_var.uniform_(.5, 2)
            o.weight.data.uniform_(.5, 1.5); o.bias.data.normal_(0, .2)
    return m

@pytest.fixture
def learn(dls):
    "fastai's default vision_learner (concat pool, two linears): not CAM-exact"
    torch.manual_seed(0)
    l = vision_learner(dls, resnet18, pretrained=False)
    _randomise_bn(l.model)
    return l

@pytest.fixture
def cam_learn(dls):
    "vision_learner with the CAM-compatible head GAP → Flatten → BN → Dropout → Linear"
    torch.manual_seed(0)
    l = vision_learner(dls, resnet18, pretrained=False, concat_pool=False, lin_ftrs=[])
    _randomise_bn(l.model)
    return l

@pytest.fixture(scope='module')
def slearn():
    "The small CNN trained on `Shapes` (cached, shared with the docs)"
    return shapes_learner(cache=True)

@pytest.fixture(scope='module')
def sbatch(slearn):
    "Six validation images of the shapes model, their Grad-CAMs, masks and boxes"
    sh,items = slearn.dls.shapes,np.array(slearn.dls.valid.items[:6])
    xb = to_batch(slearn, list(sh.images[items]))
    return xb, slearn.gradcam(xb), torch.from_numpy(sh.masks[items]), torch.from_numpy(sh.boxes[items])

@pytest.fixture(scope='session')
def trained():
    "The demo's model: 3,000 shapes, 7 epochs, from the cache the docs share (test_data.py trains it from scratch)"
    return shapes_learner(cache=True)

def small_cnn(n_out=5):
    "A tiny CNN (16 channels at the explained layer, index path [3]) so that Score-CAM costs a few dozen forwards"
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.ReLU(), nn.Conv2d(8,16,3,stride=2,padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16,n_out)).eval()

def small_x(n=3, sz=16):
    "A random batch for `small_cnn`"
    torch.manual_seed(1)
    return torch.randn(n,3,sz,sz)

# torchvision models compared with the peers at post-ReLU layers: the activations the CAM family is defined on (the XGrad-CAM and Grad-CAM++ papers assume A >= 0)
PEER_ARCHS = {'resnet18':'layer4', 'densenet121':'features.denseblock4.denselayer16.relu1', 'mobilenet_v3_small':'features.3.block.1'}
PEER_TARGETS = [2, 5]

def tv_model(name, dt=torch.float64):
    "Float64 so that the comparison measures the formulas, not float32 rounding in ill-conditioned divisions"
    torch.manual_seed(0)
    return getattr(tvm, name)(weights=None, num_classes=10).eval().to(dt)

def tv_x(sz=96, dt=torch.float64):
    "A random batch of two for `tv_model`"
    torch.manual_seed(1)
    return torch.randn(2, 3, sz, sz, dtype=dt)

def torchcam_raw(cls, m, name, x, targets=PEER_TARGETS, scale=1., **kw):
    "torchcam's map at feature resolution, before its normalisation, on a copy of `m`"
    m = copy.deepcopy(m)
    ext = cls(m, target_layer=name, **kw)
    try: return ext(class_idx=targets, scores=m(x)*scale, normalized=False)[0].detach()
    finally: ext.remove_hooks()

def pgc_scaled_target(c, s):
    "pytorch-grad-cam's `ClassifierOutputTarget(c)` times `s`"
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    class Scaled(ClassifierOutputTarget):
        def __call__(self, o): return super().__call__(o)*s
    return Scaled(c)

def pgc_acts_grads(m, x, layer, scale):
    "A copy of `m`, and pytorch-grad-cam's activations and gradients (numpy) at `layer` for the `PEER_TARGETS` times `scale`"
    import pytorch_grad_cam as pgc
    pm = copy.deepcopy(m)
    cam = pgc.GradCAM(model=pm, target_layers=[pm.get_submodule(layer)])
    try:
        outs = cam.activations_and_grads(x.clone().requires_grad_())
        sum(pgc_scaled_target(t, scale)(o) for t,o in zip(PEER_TARGETS, outs)).backward()
        a,g = cam.activations_and_grads.activations[0].numpy(),cam.activations_and_grads.gradients[0].numpy()
    finally: cam.activations_and_grads.release()
    return pm,a,g

def pgc_raw(cls, d, scale, eigen_smooth=False, **kw):
    "pytorch-grad-cam's raw map (before its ReLU, resize and scaling) from the activations and gradients in `d`"
    # `d`: the model copy `pm`, `layer`, input `x`, activations `a` and gradients `g` (see `pgc_acts_grads`)
    l = d['pm'].get_submodule(d['layer'])
    cam = cls(model=d['pm'], target_layers=[l], **kw)
    try: raw = cam.get_cam_image(d['x'], l, [pgc_scaled_target(t, scale) for t in PEER_TARGETS], d['a'], d['g'],
                                 eigen_smooth)
    finally: cam.activations_and_grads.release()
    return torch.from_numpy(np.asarray(raw, dtype=np.float64))

def err_up_to_sign(ours, raw):
    "The largest per-item error of `ours` against ReLU(raw) or ReLU(-raw), whichever is closer (an SVD's sign is arbitrary)"
    for o in ours: nonzero(o)
    return max(min(rel_err(o, torch.relu(r)), rel_err(o, torch.relu(-r))) for o,r in zip(ours, raw))

def nonzero(o): assert o.abs().max()>0, 'a map of zeros would make the comparison meaningless'

def hooks_of(m):
    "Every hook dict entry on every module of `m`"
    return [(n, k) for n,o in m.named_modules() for k in ('_forward_hooks','_forward_pre_hooks','_backward_hooks','_backward_pre_hooks')
            if len(getattr(o, k, {}))]

def snapshot(m):
    "Everything a fast_cam call must leave as it was"
    return dict(state={k:v.detach().clone() for k,v in m.state_dict(keep_vars=True).items()},
                grads={n:None if p.grad is None else p.grad.clone() for n,p in m.named_parameters()},
                rg={n:p.requires_grad for n,p in m.named_parameters()},
                training={n:o.training for n,o in m.named_modules()},
                grad_mode=torch.is_grad_enabled(), inference=torch.is_inference_mode_enabled(), hooks=hooks_of(m))

def assert_same(m, s):
    t = snapshot(m)
    for k,v in s['state'].items(): assert torch.equal(v, t['state'][k]), f'{k} changed'
    for k,v in s['grads'].items():
        w = t['grads'][k]
        assert (v is None)==(w is None) and (v is None or torch.equal(v, w)), f'.grad of {k} changed'
    for k in ('rg','training','grad_mode','inference','hooks'): assert s[k]==t[k], f'{k} changed'

def rel_err(a, b):
    "max |a-b| relative to max |b|"
    return ((a-b).abs().max() / b.abs().max().clamp_min(1e-12)).item()

def load_quiet(f):
    "`load_learner` on the CPU, without its warning about pickle (the file is the test's own)"
    from fastai.vision.all import load_learner
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        return load_learner(f, cpu=True)

def manifest_parts(o):
    "The items an interrupted `get_cams` run into `o` finished: those with a row in a manifest part (written after the item's files)"
    import pandas as pd
    return sorted(int(i) for p in o.glob('manifest.part*.csv') for i in pd.read_csv(p).idx)

def kill_when(cmd, ready, env=None, cwd=None, timeout=60):
    "Run `cmd` and, once `ready()`, SIGKILL it and every process it started (torchrun's workers run in sessions of their own)"
    import os, signal, subprocess, tempfile, time, psutil
    with tempfile.TemporaryFile('w+') as err:  # a file, not a pipe: a chatty run cannot block on a full pipe
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env, cwd=cwd)
        t = time.time()
        while not ready():
            if p.poll() is not None: err.seek(0); raise AssertionError(f'the run ended before it was killed: {err.read()[-2000:]}')
            assert time.time()-t<timeout, 'no progress'
            time.sleep(0.02)
        procs = [psutil.Process(p.pid)]
        procs += procs[0].children(recursive=True)
        for o in procs:
            try: o.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess: pass
        assert p.wait()==-signal.SIGKILL
        psutil.wait_procs(procs[1:], timeout=10)

KILLED = '''
import os, sys, time, json, torch, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
from fastai.vision.all import *
from fast_cam.all import *
torch.set_num_threads(1)
learner,imgs,out,res,delay = sys.argv[1:6]
learn = load_learner(learner, cpu=True)
class Slow(Callback):
    "A slow model: time for the test to kill the run between batches"
    def after_batch(self): time.sleep(float(delay))
learn.add_cb(Slow())
dl = learn.dls.test_dl(get_image_files(imgs).sorted(), bs=4)
with learn.no_bar(): man = learn.get_cams(dl, out=out, with_preds=False, resume=True)
Path(f"{res}.{os.environ.get('RANK', 0)}").write_text(json.dumps(man.attrs))
'''
