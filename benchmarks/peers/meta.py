"The meta-methods of `fast_cam.meta` against pytorch-grad-cam's and torchcam's wrappers."
import pytorch_grad_cam as pgc
import torchcam.methods as tcm
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from peers import Case

STAGES = ['layer2', 'layer3', 'layer4']

def pgc_finer(m, layer, x, t):
    "pytorch-grad-cam's `FinerCAM` over Grad-CAM: the predicted class against its three nearest classes"
    cam = pgc.FinerCAM(m, [m.get_submodule(layer)], base_method=pgc.GradCAM)
    return lambda: cam(x)

def tc_finer(m, layer, x, t):
    "torchcam's `FinerCAM` over Grad-CAM (γ=0.6, three references), from a fresh forward each call"
    cam = tcm.FinerCAM(m, layer, input_shape=tuple(x.shape[1:]), base_method=tcm.GradCAM)
    return lambda: cam(class_idx=t, scores=m(x))

def tc_refine(m, layers, x, t):
    "torchcam's `RefineCAM` over Grad-CAM++"
    cam = tcm.RefineCAM(m, list(layers), input_shape=tuple(x.shape[1:]))
    return lambda: cam(class_idx=t, scores=m(x))

def tc_layercam_fused(m, layers, x, t):
    "torchcam's `LayerCAM` of several layers, fused by its `fuse_cams` (tanh(2·) of the min-max scaled maps, max)"
    cam = tcm.LayerCAM(m, list(layers), input_shape=tuple(x.shape[1:]))
    return lambda: cam.fuse_cams(cam(class_idx=t, scores=m(x)))

def pgc_sess(m, layer, x, t):
    "pytorch-grad-cam's `SESS` over Grad-CAM with 3 scales (fast_cam's default)"
    cam = pgc.SESS(m, [m.get_submodule(layer)], base_method=pgc.GradCAM, num_scales=3)
    return lambda: cam(x, targets=[ClassifierOutputTarget(c) for c in t])

CASES = [Case('finercam', 'finercam', 'pytorch-grad-cam', pgc_finer, dict(weighting='softmax', gamma=1.), gradient=True),
         Case('finercam_tc', 'finercam', 'torchcam', tc_finer, gradient=True),
         Case('refinecam', 'refinecam', 'torchcam', tc_refine, layer=STAGES, gradient=True),
         Case('layercam_fused', 'layercam_fused', 'torchcam', tc_layercam_fused, dict(norm='minmax'), layer=STAGES,
              gradient=True),
         Case('sess', 'sess', 'pytorch-grad-cam', pgc_sess, n=1)]
