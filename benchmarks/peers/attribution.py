"The input attributions of `fast_cam.attribution` against captum's (`layer=None`: they explain the input pixels)."
import torch
from captum.attr import Saliency, InputXGradient, IntegratedGradients, Occlusion, NoiseTunnel
from peers import Case

def captum_attr(cls, nt_type=None, **kw):
    "A `make_peer` for captum's attribution `cls` (in a `NoiseTunnel` of `nt_type` if given), one target per image"
    def make(m, layer, x, t):
        attr = cls(m) if nt_type is None else NoiseTunnel(cls(m))
        extra = {} if nt_type is None else dict(nt_type=nt_type)
        return lambda: attr.attribute(x, target=t, **extra, **kw).detach()
    return make

_win = dict(sliding_window_shapes=(3,28,28), strides=(3,14,14))  # 15 × 15 positions at 224 px
_nt = dict(n_samples=8, stdevs=0.15)
CASES = [
    Case('saliency', 'saliency', 'captum', captum_attr(Saliency), layer=None, gradient=True),
    Case('input_x_gradient', 'input_x_gradient', 'captum', captum_attr(InputXGradient), layer=None, gradient=True),
    Case('integrated_gradients', 'integrated_gradients', 'captum',
         captum_attr(IntegratedGradients, n_steps=50, internal_batch_size=128), dict(n_steps=50, bs=128), layer=None),
    Case('occlusion', 'occlusion', 'captum', captum_attr(Occlusion, perturbations_per_eval=16, **_win),
         dict(**_win, bs=64, bar=False), layer=None),
    Case('smoothgrad', 'smoothgrad', 'captum', captum_attr(Saliency, 'smoothgrad', nt_samples=8, stdevs=0.15),
         _nt, layer=None),
    Case('vargrad', 'vargrad', 'captum', captum_attr(Saliency, 'vargrad', nt_samples=8, stdevs=0.15), _nt, layer=None),
]
