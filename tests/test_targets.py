"`fast_cam.targets`: what a target explains on a one-logit (binary) model: the logit for target 0, its negation through a callable."
from torch import nn
import torch, torch.nn.functional as F
from fast_cam.all import *
from conftest import rel_err

def test_multilabel_like_single_logit():
    "A one-logit (binary) model: target 0 explains the logit; a callable explains its negation"
    m = nn.Sequential(nn.Conv2d(3,4,3,padding=1), nn.ReLU(), nn.Conv2d(4,4,3,padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4,1)).eval()
    x = torch.randn(2,3,12,12)
    pos,neg = explain(m, x, target=0, layer='2'),explain(m, x, target=lambda o: -o[:,0], layer='2')
    raw = explain(m, x, 'cam', target=0, layer='2')
    assert rel_err(pos, F.relu(raw)/144) < 1e-5 and rel_err(neg, F.relu(-raw)/144) < 1e-5
