"""The peers' implementations of fast_cam's methods, one file per fast_cam module: each file's `CASES` lists `Case`s.

`benchmarks/methods.py` times every case against its peer; the cross-check tests can build the same peer callables."""
import copy
from dataclasses import dataclass, field

@dataclass
class Case:
    "One method timed against one peer: `make_peer(m, layer_name, x, targets) -> f()` returns the peer's maps"
    name: str                 # the row's name (unique), e.g. 'ablationcam'
    method: str               # fast_cam's method name (or a `CAMMethod`)
    peer: str                 # 'pytorch-grad-cam', 'torchcam' or 'captum'
    make_peer: object         # builds the peer's callable; it gets its own copy of the model
    kwargs: dict = field(default_factory=dict)   # fast_cam's options for `explain`
    model: str = 'resnet18'   # a torchvision model name
    layer: str = 'layer4'     # the layer both explain (dotted name); None for input attributions
    n: int = 4                # images per call (at full size)
    gradient: bool = False    # a gradient rule: also reported against Grad-CAM (target <= 1.05x)
