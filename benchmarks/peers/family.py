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

def pgc_call(cls, **call):
    "A `make_peer` for pytorch-grad-cam's CAM class `cls` called with the keyword arguments `call` (e.g. `eigen_smooth`)"
    def make(m, layer, x, t):
        cam = cls(model=m, target_layers=[m.get_submodule(layer)])
        targets = [ClassifierOutputTarget(c) for c in t]
        return lambda: cam(input_tensor=x, targets=targets, **call)
    return make

def torchcam_smooth(m, layer, x, t):
    "torchcam's Smooth Grad-CAM++ with 4 noisy copies, one target per image"
    from torchcam.methods import SmoothGradCAMpp
    ext = SmoothGradCAMpp(m, target_layer=layer, num_samples=4, input_shape=tuple(x.shape[1:]))
    return lambda: ext(class_idx=list(t), scores=m(x))

CASES += [Case('gradcam_elementwise', 'gradcam_elementwise', 'pytorch-grad-cam', pgc_cam(pgc.GradCAMElementWise), gradient=True),
          Case('eigengradcam', 'eigengradcam', 'pytorch-grad-cam', pgc_cam(pgc.EigenGradCAM), gradient=True),
          Case('fem', 'fem', 'pytorch-grad-cam', pgc_cam(pgc.FEM)),
          Case('kpcacam', 'kpcacam', 'pytorch-grad-cam', pgc_cam(pgc.KPCA_CAM)),
          Case('randomcam', 'randomcam', 'pytorch-grad-cam', pgc_cam(pgc.RandomCAM)),
          Case('gradcam_eigen_smooth', 'gradcam', 'pytorch-grad-cam', pgc_call(pgc.GradCAM, eigen_smooth=True),
               kwargs=dict(eigen_smooth=True), gradient=True),
          Case('smoothgradcampp', 'smoothgradcampp', 'torchcam', torchcam_smooth, kwargs=dict(n_samples=4), gradient=True)]

def torchcam_gradcam(m, layer, x, t):
    "torchcam's Grad-CAM at the layer's resolution (it hooks 2-D and 3-D maps alike), one target per item"
    from torchcam.methods import GradCAM
    ext = GradCAM(m, target_layer=layer, input_shape=tuple(x.shape[1:]))
    return lambda: ext(class_idx=list(t), scores=m(x))

# volumes: clips [n,3,8,S,S] through torchvision's r3d_18 (`setup` reads the 'video.' prefix); pytorch-grad-cam
# resizes its 3-D maps to the clip with scipy's zoom, torchcam returns them at the layer's resolution as fast_cam does
CASES += [Case('gradcam_3d', 'gradcam', 'pytorch-grad-cam', pgc_cam(pgc.GradCAM), model='video.r3d_18', n=2, gradient=True),
          Case('gradcam_3d_tc', 'gradcam', 'torchcam', torchcam_gradcam, model='video.r3d_18', n=2, gradient=True)]
