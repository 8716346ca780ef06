"The Grad-CAM family of `fast_cam.methods` against pytorch-grad-cam's classes."
import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from peers import Case

def pgc_cam(cls, **kw):
    "A `make_peer` for pytorch-grad-cam's CAM class `cls`: its maps (upsampled to the input and min-max scaled, as it returns them), one target per image"
    def make(m, layer, x, t):
        cam = cls(model=m, target_layers=[m.get_submodule(layer)], **kw)
        targets = [ClassifierOutputTarget(c) for c in t]
        return lambda: cam(input_tensor=x, targets=targets)
    return make

CASES = [Case('gradcam', 'gradcam', 'pytorch-grad-cam', pgc_cam(pgc.GradCAM), gradient=True)]
