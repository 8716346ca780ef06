"FullGrad and ShapleyCAM of `fast_cam.fullgrad` against pytorch-grad-cam's classes."
import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from peers import Case

def pgc_cam(cls):
    "A `make_peer` for pytorch-grad-cam's class `cls` (`layer` None: no target layers), one target per image"
    def make(m, layer, x, t):
        cam = cls(model=m, target_layers=[] if layer is None else [m.get_submodule(layer)])
        targets = [ClassifierOutputTarget(c) for c in t]
        return lambda: cam(input_tensor=x, targets=targets)
    return make

CASES = [Case('fullgrad', 'fullgrad', 'pytorch-grad-cam', pgc_cam(pgc.FullGrad), layer=None),
         Case('shapleycam', 'shapleycam', 'pytorch-grad-cam', pgc_cam(pgc.ShapleyCAM), gradient=True)]
