"`fast_cam.guided`: SmoothGrad on guided backprop (`n_samples`, `noise`)."
import torch
from fast_cam.all import *

def test_smoothgrad(learn, files):
    torch.manual_seed(0)
    sg = learn.guided_backprop(files, n_samples=8)
    gb = learn.guided_backprop(files)
    assert sg.shape==gb.shape and not torch.allclose(sg, gb)
    torch.manual_seed(0)
    assert torch.equal(sg, learn.guided_backprop(files, n_samples=8))
    assert torch.allclose(learn.guided_backprop(files, n_samples=3, noise=0.), gb, atol=1e-6), 'no noise: the plain guided gradients'
