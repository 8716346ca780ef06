"`fast_cam.masked`: Ablation-CAM against pytorch-grad-cam, SS-CAM and IS-CAM against torchcam (the same noise in both), on three architectures."
import os, sys, copy, pytest, torch
os.environ.setdefault('TQDM_DISABLE', '1')  # pytorch-grad-cam's progress bars
from pathlib import Path
import torchcam.methods as tcm
from fast_cam.all import *
from conftest import rel_err, tv_model, tv_x, nonzero, PEER_TARGETS
sys.path.insert(0, str(Path(__file__).parents[1]/'benchmarks'))
from peers.masked import pgc_ablation_raw

# post-ReLU layers of few channels (the cost is one forward per channel and sample), float64 so that the comparison
# measures the formulas and not float32 rounding in the differences of scores
ARCHS = {'resnet18':'layer2', 'shufflenet_v2_x0_5':'stage2', 'mobilenet_v3_small':'features.3.block.1'}

@pytest.fixture(scope='module')
def x(): return tv_x(32)

@pytest.fixture(scope='module', params=list(ARCHS))
def arch(request): return request.param, tv_model(request.param), ARCHS[request.param]

def test_ablationcam_vs_pgc(arch, x):
    name,m,layer = arch
    ours = explain(m, x, 'ablationcam', target=PEER_TARGETS, layer=layer, bs=64, bar=False)
    peer = pgc_ablation_raw(m, layer, x, PEER_TARGETS, bs=64)
    nonzero(ours)
    e = rel_err(ours, peer.to(ours))
    print(f'{name} ablationcam: rel err vs pytorch-grad-cam {e:.2e}')
    assert e<=1e-5

class _Noise:
    "Stands for torchcam's `Normal(0, std)`: sample `s` of its calls is SS-CAM's noise of sample `s`, the same for every item"
    def __init__(self, k, hw, std): self.k,self.hw,self.std,self.s = k,hw,std,0
    def sample(self, size):
        z = torch.stack([get_method('sscam').noise(self.s, j, self.hw, self.std, 0) for j in range(self.k)])
        self.s += 1
        return z.expand(size)

@pytest.mark.parametrize('meth', ['sscam', 'iscam'])
def test_sampled_vs_torchcam(arch, x, meth):
    name,m,layer = arch
    N,std = 2,0.5
    kw = dict(std=std) if meth=='sscam' else {}
    ours = explain(m, x, meth, target=PEER_TARGETS, layer=layer, bs=64, bar=False, n_samples=N, **kw)
    mc = copy.deepcopy(m)
    ext = (tcm.SSCAM if meth=='sscam' else tcm.ISCAM)(mc, target_layer=layer, batch_size=64, num_samples=N,
                                                      input_shape=tuple(x.shape[1:]), **kw)
    try:
        with torch.no_grad(): out = mc(x)
        if meth=='sscam': ext._distrib = _Noise(ext.hook_a[0].shape[1], x.shape[-2:], std)
        peer = ext(class_idx=PEER_TARGETS, scores=out, normalized=False)[0].detach()
    finally: ext.remove_hooks()
    nonzero(ours)
    e = rel_err(ours, peer.to(ours))
    print(f'{name} {meth}: rel err vs torchcam {e:.2e}')
    assert e<=1e-5

@pytest.mark.parametrize('meth', ['sscam', 'iscam'])
def test_sampled_maps_do_not_depend_on_batching(meth):
    "Each (sample, channel) has its own noise: an item's map is the same alone or in a batch, and for any `bs`"
    from conftest import small_cnn, small_x
    m,xb = small_cnn(),small_x(3)
    ref = explain(m, xb, meth, layer=[3], n_samples=3, bar=False)
    torch.testing.assert_close(explain(m, xb, meth, layer=[3], n_samples=3, bs=5, bar=False), ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(explain(m, xb[1:2], meth, layer=[3], n_samples=3, bar=False), ref[1:2], rtol=1e-5, atol=1e-7)

@pytest.mark.parametrize('meth', ['sscam', 'iscam'])
def test_sampled_fast_fills(meth):
    "The fast mode's fills work for SS-CAM and IS-CAM too; `fill='gp'` is the exact map when every channel is scored; a wrong fill is refused"
    from conftest import small_cnn, small_x
    m,xb = small_cnn(),small_x(3)
    kw = dict(layer=[3], n_samples=2, bar=False)
    ex = explain(m, xb, meth, **kw)
    k = capture(m, xb, [m[3]], grad=False).acts[0].shape[1]
    torch.testing.assert_close(explain(m, xb, meth, max_channels=k, fill='gp', **kw), ex)
    for fill in ('gp','min','mean','zero'):
        fm = explain(m, xb, meth, max_channels=k//2, fill=fill, **kw)
        assert fm.shape==ex.shape and torch.isfinite(fm).all() and fm.abs().max()>0
    with pytest.raises(CAMError, match="`fill` must be one of 'gp'"): explain(m, xb, meth, max_channels=2, fill='median', **kw)

class _ListBlock(torch.nn.Module):
    "A block that passes `[map, skip]` on, as timm's selecsls blocks do (`as_list=False`: the map alone)"
    def __init__(self, conv, as_list=True): super().__init__(); self.conv,self.as_list = conv,as_list
    def forward(self, x): y = torch.relu(self.conv(x)); return [y, x] if self.as_list else y

class _ListNet(torch.nn.Module):
    def __init__(self, blk, conv2, conv3, head): super().__init__(); self.blk,self.conv2,self.conv3,self.head = blk,conv2,conv3,head
    def forward(self, x):
        o = self.blk(x)
        y,s = o if isinstance(o, list) else (o, x)
        return self.head(self.conv2(y) + self.conv3(s))

@pytest.mark.parametrize('target', [None, [0, 2]])
def test_ablationcam_list_outputs(target):
    "A layer whose output is a list is ablated in its first tensor, the map `capture` reads: the same as its tensor twin"
    nn = torch.nn
    torch.manual_seed(0)
    conv,c2,c3 = nn.Conv2d(3, 6, 3, padding=1),nn.Conv2d(6, 4, 3, padding=1),nn.Conv2d(3, 4, 1)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    ml,mt = _ListNet(_ListBlock(conv), c2, c3, head).eval(),_ListNet(_ListBlock(conv, False), c2, c3, head).eval()
    xb = torch.randn(2, 3, 16, 16)
    ours = explain(ml, xb, 'ablationcam', target=target, layer='blk', bar=False)
    ref = explain(mt, xb, 'ablationcam', target=target, layer='blk', bar=False)
    nonzero(ref)
    assert rel_err(ours, ref) < 1e-5
