"`fast_cam.sanity`: the model-randomisation sanity check: seeded randomisation, the cascade's blocks, the model left untouched, batch = items."
import pytest, torch
from torch import nn
from fast_cam.all import *
from conftest import snapshot, assert_same

def test_randomise_is_seeded_and_leaves_global_rng():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    p0 = [p.clone() for p in m.parameters()]
    st = torch.get_rng_state()
    a = [p.clone() for p in randomise_(m, seed=3).parameters()]
    assert torch.equal(st, torch.get_rng_state())
    assert not torch.equal(a[0], p0[0])
    b = [p.clone() for p in randomise_(m, seed=3).parameters()]
    assert all(torch.equal(x, y) for x,y in zip(a, b))

def test_randomise_without_reset_parameters():
    class Scale(nn.Module):
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.full((50,), 2.)); self.v = nn.Parameter(torch.linspace(0, 1, 50))
    s = Scale()
    randomise_(s)
    assert s.w.std() > 0 and s.v.std().item() == pytest.approx(torch.linspace(0, 1, 50).std().item(), rel=.5)

def test_cascade_blocks(learn, slearn):
    assert cascade_blocks(slearn)==['1.2', '0.3', '0.2', '0.1', '0.0']
    bl = cascade_blocks(learn)                                   # vision_learner: head layers, then the resnet body's
    assert bl[0]=='1.8' and bl[-1]=='0.0' and '0.7' in bl and bl.index('0.7') < bl.index('0.4')

def test_sanity_check_leaves_model_untouched(learn, files):
    m = learn.model.train()
    xb,yb = learn.dls.one_batch()
    learn.loss_func(m(xb), yb).backward()                        # .grad filled, train mode, as mid-training
    learn.freeze()
    x = to_batch(learn, files)                                   # reading files goes through a DataLoader, which draws a seed
    s,rng = snapshot(m),torch.get_rng_state()
    r = learn.cam_sanity_check(x, 'gradcampp', blocks=['1.8', '1.4', '0.7', '0.0'])
    assert_same(m, s)
    assert torch.equal(rng, torch.get_rng_state())               # the random weights come from their own seed
    assert list(r.df.randomised)==['(none)', '1.8', '1.4', '0.7', '0.0'] and r.maps.shape==(5, 4, 64, 64)
    with pytest.raises(LayerError): learn.cam_sanity_check(files, 'gradcam', layer='nope')  # a failing call too
    assert_same(m, s)

@pytest.mark.parametrize('ctx', [torch.no_grad, torch.inference_mode])
def test_sanity_check_under_grad_modes(slearn, sbatch, ctx):
    xb = sbatch[0][:2]
    ref = sanity_check(slearn, xb, blocks=['1.2', '0.3'])
    s = snapshot(slearn.model)
    with ctx(): r = sanity_check(slearn, xb, blocks=['1.2', '0.3'])
    assert_same(slearn.model, s)
    torch.testing.assert_close(r.spearman, ref.spearman)

def test_sanity_check_batch_is_items(slearn, sbatch):
    xb = sbatch[0][:4]
    r = sanity_check(slearn, xb, 'gradcam')
    for i in range(4):
        ri = sanity_check(slearn, xb[i:i+1], 'gradcam')
        torch.testing.assert_close(ri.spearman[:,0], r.spearman[:,i], atol=1e-5, rtol=0, equal_nan=True)
        torch.testing.assert_close(ri.ssim[:,0], r.ssim[:,i], atol=1e-5, rtol=0)

def test_sanity_check_tells_methods_apart(slearn, sbatch):
    xb = sbatch[0]
    g = slearn.cam_sanity_check(xb, 'gradcam')
    e = slearn.cam_sanity_check(xb, 'eigencam', blocks=['1.2'])
    # Grad-CAM follows the weights; Eigen-CAM, which ignores the head, cannot change when only the head is random
    assert g.df.spearman.iloc[-1] < .5
    assert e.df.spearman.iloc[-1]==pytest.approx(1., abs=1e-6)
    assert g.maps.shape==(6, 6, 64, 64) and 0<=g.maps.min() and g.maps.max()<=1
    ax = g.plot(); g.show([0,1])
    import matplotlib.pyplot as plt; plt.close('all')

def _tv_vit():
    from torchvision.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    m = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3).eval()
    nn.init.normal_(m.heads.head.weight, std=.5)  # torchvision zero-initialises the head: all gradients would be zero
    return m

@pytest.mark.parametrize('method,model', [('layercam_fused','resnet'), ('refinecam','resnet'), ('legrad','vit'), ('rollout','vit')])
def test_sanity_check_reads_the_methods_own_layers(method, model):
    "With `layer=None` the check explains the layers `explain` reads by default (several stages, every block), not `cam_layer`'s one"
    from torchvision.models import resnet18
    torch.manual_seed(0)
    m = resnet18(num_classes=3).eval() if model=='resnet' else _tv_vit()
    x = torch.randn(2,3,32,32) if model=='vit' else torch.randn(2,3,64,64)
    ls = get_method(method).read_layers(m, x)
    assert isinstance(ls, list) and len(ls)>1
    assert all(any(l is o for o in m.modules()) for l in ls)
    s0,s1 = sanity_check(m, x, method),sanity_check(m, x, method, layer=ls)
    assert torch.equal(s0.maps, s1.maps)
    # the maps of the trained model are `explain`'s own default maps
    assert torch.allclose(s0.maps[0], min_max_scale(saliency_at(saliency(explain(m, x, method)), x.shape[-2:])))

def test_cascade_blocks_transformers():
    "A ViT's blocks are reset one at a time, last first; the modules above them are opened, CNN stages are not"
    import timm
    from torchvision.models import VisionTransformer
    v = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=64, num_classes=3, depth=3)
    assert cascade_blocks(v)==['head', 'norm', 'blocks.2', 'blocks.1', 'blocks.0', 'patch_embed']
    tv = VisionTransformer(64, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3)
    assert cascade_blocks(tv)==['heads', 'encoder.ln', 'encoder.layers.encoder_layer_1', 'encoder.layers.encoder_layer_0', 'conv_proj']
    s = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False, img_size=64, window_size=2, num_classes=3)
    bl = cascade_blocks(s)
    assert bl[:4]==['head', 'norm', 'layers.3.blocks.1', 'layers.3.blocks.0'] and bl[-1]=='patch_embed'
    assert bl.index('layers.2.blocks.0') < bl.index('layers.1.blocks.1')
    r = sanity_check(v.eval(), torch.randn(2, 3, 64, 64), 'gradcam')
    assert list(r.df.randomised)==['(none)', 'head', 'norm', 'blocks.2', 'blocks.1', 'blocks.0', 'patch_embed']
