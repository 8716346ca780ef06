"`fast_cam.core`: module paths (`get_module`), and `ModelState` giving the training flags back even when `eval()` fails."
import pytest
from torch import nn
from fast_cam.all import *
from conftest import snapshot, assert_same, small_x

def test_get_module(learn):
    m = learn.model
    assert get_module(learn, [0,-1]) is m[0][7] and get_module(m, [-1,-1]) is m[1][-1] and get_module(m, 1) is m[1]
    assert get_module(m, '0.7.1.conv2') is m[0][7][1].conv2 and get_module(m, m[0][3]) is m[0][3]

# an exception from `model.eval()` leaves the training flags as they were
class NoEval(nn.Module):
    "A module whose `train(False)` fails, after the modules before it were already switched"
    def forward(self, x): return x
    def train(self, mode=True):
        if not mode: raise RuntimeError('this module refuses eval mode')
        return super().train(mode)

@pytest.mark.parametrize('call', ['explain', 'cam_layer', 'ModelState'])
def test_eval_failure_restores_modes(call):
    m = nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.BatchNorm2d(8), nn.ReLU(), NoEval(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8,2)).train()
    m[1].eval()  # a mix of modes: both must come back
    s = snapshot(m)
    with pytest.raises(RuntimeError, match='refuses eval'):
        if call=='explain': explain(m, small_x(2), layer=[2])
        elif call=='cam_layer': cam_layer(m, small_x(1))
        else:
            with ModelState(m): pass
    assert_same(m, s)
    assert m.training and not m[1].training and m[0].training
