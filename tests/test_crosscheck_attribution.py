"The input attributions of `fast_cam.attribution` against captum's, on three torchvision architectures."
import copy, pytest, torch, torchvision.models as tvm
import captum.attr as ca, captum.attr._core.noise_tunnel as captum_nt
from fast_cam.all import *
from conftest import rel_err

ARCHS = ['resnet18', 'densenet121', 'mobilenet_v3_small']
TARGETS = [1, 7]

@pytest.fixture(scope='module', params=ARCHS)
def mx(request):
    torch.manual_seed(0)
    m = getattr(tvm, request.param)(weights=None, num_classes=10).eval()
    torch.manual_seed(1)
    return request.param, m, torch.randn(2, 3, 64, 64)

def check(arch, name, ours, cap):
    assert ours.shape==cap.shape and ours.abs().max()>0, 'a map of zeros would make the comparison meaningless'
    e = rel_err(ours, cap)
    print(f'{arch} {name}: rel err vs captum {e:.2e}')
    assert e<=1e-5, f'{arch} {name}: {e:.2e}'

def test_gradients(mx):
    arch,m,x = mx
    for abs_ in (True, False):
        check(arch, f'saliency abs={abs_}', explain(m, x, 'saliency', TARGETS, abs=abs_),
              ca.Saliency(m).attribute(x.clone(), target=TARGETS, abs=abs_))
    check(arch, 'input_x_gradient', explain(m, x, 'input_x_gradient', TARGETS),
          ca.InputXGradient(m).attribute(x.clone(), target=TARGETS).detach())

@pytest.mark.parametrize('rule', ['gausslegendre', 'riemann_trapezoid'])
def test_integrated_gradients(mx, rule):
    "Batched steps, chunked by `bs` (3 steps of 2 images per backward) against captum's one batch"
    arch,m,x = mx
    if arch!='resnet18' and rule!='gausslegendre': pytest.skip('the rules differ in the steps only: one architecture')
    ours = explain(m, x, 'integrated_gradients', TARGETS, n_steps=4, rule=rule, bs=6, baseline=0.1)
    check(arch, f'integrated_gradients {rule}', ours,
          ca.IntegratedGradients(m).attribute(x, 0.1, target=TARGETS, n_steps=4, method=rule).detach())

def test_occlusion(mx):
    arch,m,x = mx
    kw = dict(sliding_window_shapes=(3,24,24), strides=(3,24,24))  # the last window runs past the edge
    ours = explain(m, x, 'occlusion', TARGETS, **kw, baseline=0.5, bar=False)
    cap = ca.Occlusion(m).attribute(x, target=TARGETS, baselines=0.5, **kw, perturbations_per_eval=8)
    check(arch, 'occlusion', ours, cap)

@pytest.mark.parametrize('kind', ['smoothgrad', 'smoothgrad_sq', 'vargrad'])
def test_noise_tunnel(mx, kind, monkeypatch):
    """captum draws its noise with `torch.normal(0, stdevs)` for the `n·n_samples` rows item by item;
    patched to give back fast_cam's draws (`item_noise`, the same for every item), the two compute the same maps"""
    arch,m,x = mx
    if arch!='resnet18' and kind!='smoothgrad': pytest.skip('the kinds differ in the reduction only: one architecture')
    S,sd = 3,0.2
    z = item_noise(x.shape[1:], S, sd, 0, x)
    def normal(mean, std):
        assert mean==0 and torch.allclose(std, torch.full_like(std, sd))
        return z.repeat(len(x), 1, 1, 1)
    monkeypatch.setattr(captum_nt.torch, 'normal', normal)
    cap = ca.NoiseTunnel(ca.Saliency(m)).attribute(x, nt_type=kind, nt_samples=S, stdevs=sd, target=TARGETS)
    monkeypatch.undo()
    check(arch, kind, explain(m, x, kind, TARGETS, n_samples=S, stdevs=sd), cap)
    if arch=='resnet18' and kind=='smoothgrad':  # another base: integrated gradients
        monkeypatch.setattr(captum_nt.torch, 'normal', normal)
        nt = ca.NoiseTunnel(ca.IntegratedGradients(m))
        cap = nt.attribute(x, nt_type=kind, nt_samples=S, stdevs=sd, target=TARGETS, n_steps=2)
        monkeypatch.undo()
        check(arch, f'{kind} of integrated gradients',
              explain(m, x, kind, TARGETS, base='integrated_gradients', n_samples=S, stdevs=sd, n_steps=2), cap)

def test_noise_statistics():
    "Without the patch: fast_cam's noise has the absolute std `stdevs` captum's has, and is repeatable"
    x = torch.zeros(1, 3, 32, 32)
    z = item_noise(x.shape[1:], 16, 0.3, 0, x)
    assert abs(z.std().item()-0.3)<0.01 and abs(z.mean().item())<0.01
    assert torch.equal(z, item_noise(x.shape[1:], 16, 0.3, 0, x))
    assert not torch.equal(z, item_noise(x.shape[1:], 16, 0.3, 1, x))
