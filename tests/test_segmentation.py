"Segmentation learners: a class's logit summed over its pixels (or `region=`), the U-Net layer, and the Learner API on a `unet_learner`"
import copy, pytest, torch, numpy as np
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from fastai.vision.all import unet_learner, resnet18, Tensor, nn, F, DynamicUnet, UnetBlock
from fast_cam.all import *
from conftest import snapshot, assert_same, rel_err

SZ = 32  # a 16×16 map at the last UnetBlock

@pytest.fixture(scope='module')
def seg():
    "A resnet18 `unet_learner` (random weights) on the segmentation variant of `Shapes`"
    torch.manual_seed(0)
    ds = Shapes(16, size=SZ, seed=0)
    return unet_learner(ds.seg_dls(bs=4), resnet18, pretrained=False, n_out=len(ds.codes))

@pytest.fixture(scope='module')
def xb(seg): return to_batch(seg, list(seg.dls.shapes.images[:2]))

def _out(seg, xb):
    with torch.no_grad(), ModelState(seg.model): return seg.model(xb).as_subclass(Tensor)

def test_unet_layer(seg, learn):
    m = seg.model
    blks = [o for o in m.layers if isinstance(o, UnetBlock)]
    assert unet_layer(seg) is blks[-1] and unet_layer(m) is blks[-1]
    assert unet_layer(nn.Sequential(m, nn.Identity())) is blks[-1]  # a U-Net inside a bigger model
    assert unet_layer(learn) is None                                 # a classifier has none

def test_cam_layer_is_unet_layer(seg):
    assert cam_layer(seg) is unet_layer(seg)

def test_vocab_is_codes(seg):
    assert get_vocab(seg) == ['background','circle','cross','square','triangle']
    dls = seg.dls
    v = dls.vocab; del dls.vocab   # a `MaskBlock(codes)` DataBlock without `dls.vocab = codes`: the codes come from `AddMaskCodes`
    try: assert get_vocab(seg) == v
    finally: dls.vocab = v

def test_score_is_class_logit_over_its_pixels(seg, xb):
    out = _out(seg, xb)
    for c in range(out.shape[1]):
        s,idx = target_scores(c, out)
        want = (out[:,c]*(out.argmax(1)==c)).flatten(1).sum(1)
        assert torch.allclose(s, want) and (idx==c).all()
    box = torch.zeros(SZ, SZ, dtype=torch.bool); box[5:20, 10:30] = True
    s,_ = target_scores(SegTarget(2, region=(10,5,30,20)), out)
    assert torch.allclose(s, (out[:,2]*box).flatten(1).sum(1))

def test_target_none_most_frequent_foreground(seg, xb):
    out = _out(seg, xb)
    pred = out.argmax(1)
    cnt = torch.stack([(pred==c).flatten(1).sum(1) for c in range(out.shape[1])], 1)
    want = torch.where(cnt[:,1:].sum(1)>0, cnt[:,1:].argmax(1)+1, 0)  # class 0 is 'background'
    assert (resolve_target(None, out, get_vocab(seg))==want).all()
    assert torch.equal(seg.gradcam(xb, layer=unet_layer(seg)), seg.gradcam(xb, target=want, layer=unet_layer(seg)))
    # with nothing but background predicted, None explains the background
    o = torch.zeros(2,3,4,4); o[:,0] = 1
    assert (resolve_target(None, o)==0).all()

def test_labels_and_ints(seg, xb):
    l = unet_layer(seg)
    mp = seg.gradcam(xb, target='cross', layer=l)
    assert mp.dtype==torch.float32 and mp.shape==(2,SZ//2,SZ//2)
    assert torch.equal(mp, seg.gradcam(xb, target=2, layer=l))
    with pytest.raises(TargetError, match="Did you mean 'cross'"): seg.gradcam(xb, target='crosss', layer=l)
    with pytest.raises(TargetError, match='out of range'): seg.gradcam(xb, target=5, layer=l)

@pytest.mark.parametrize('layer', ['unet', 'block2'])
def test_matches_pytorch_grad_cam(seg, xb, layer):
    "Grad-CAM with pytorch-grad-cam's `SemanticSegmentationTarget` (the class's argmax pixels) on the same model, layer and class"
    from pytorch_grad_cam import GradCAM as PGC
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    from pytorch_grad_cam.utils.image import scale_cam_image
    pick = lambda m: unet_layer(m) if layer=='unet' else m.layers[5]
    out = _out(seg, xb)
    c = int(out.argmax(1)[out.argmax(1)>0].mode().values)  # a class the model predicts somewhere
    ours = seg.gradcam(xb, target=c, layer=pick(seg.model))
    m2 = copy.deepcopy(seg.model).eval()   # pytorch-grad-cam calls .backward(), which fills .grad: keep it off the fixture
    tg = [SemanticSegmentationTarget(c, (out[i].argmax(0)==c).float().numpy()) for i in range(len(xb))]
    # the clone keeps pytorch-grad-cam's in-place `detach_` off a view of the model's activation
    with PGC(model=m2, target_layers=[pick(m2)], reshape_transform=lambda t: t.clone()) as cam:
        theirs = cam(input_tensor=xb, targets=tg)
        A,G = cam.activations_and_grads.activations[0],cam.activations_and_grads.gradients[0]
    raw = F.relu((G.mean((2,3), keepdim=True)*A).sum(1))
    assert rel_err(ours, raw) < 1e-5
    assert np.abs(scale_cam_image(scale_cam_image(ours.numpy(), (SZ,SZ))) - theirs).max() < 1e-5

def test_region_mask_and_box(seg, xb):
    l = unet_layer(seg)
    box = (8,4,30,20)
    mk = torch.zeros(SZ, SZ, dtype=torch.bool); mk[4:20, 8:30] = True
    a = seg.gradcam(xb, target=1, layer=l, region=box)
    assert torch.equal(a, seg.gradcam(xb, target=1, layer=l, region=mk))                 # a box is its mask
    assert torch.equal(a, seg.gradcam(xb, target=1, layer=l, region=mk[None].repeat(2,1,1)))  # one mask per item
    assert torch.equal(a, seg.gradcam(xb, target=1, layer=l, region=[box]*2))              # one box per item
    assert torch.equal(a, seg.gradcam(xb, target=1, layer=l, region=mk.numpy()))
    assert not torch.allclose(a, seg.gradcam(xb, target=1, layer=l))                        # the region changes the score
    # each item's own box
    boxes = [(0,0,10,10), (16,16,32,32)]
    b = seg.gradcam(xb, target=1, layer=l, region=boxes)
    for i in range(2): assert rel_err(b[i], seg.gradcam(xb[i:i+1], target=1, layer=l, region=boxes[i])[0]) < 1e-4
    # heatmap and the general entry point take it too
    assert torch.equal(a, seg.heatmap(xb, 'gradcam', target=1, layer=l, region=box))
    assert torch.equal(a, explain(seg, xb, target=1, layer=l, region=box))

def test_region_target_none(seg, xb):
    "`target=None` with a region: the most frequent non-background class inside it"
    out = _out(seg, xb)
    mk = torch.zeros(SZ, SZ, dtype=torch.bool); mk[:16, :16] = True
    pred = torch.where(mk, out.argmax(1), -1)
    cnt = torch.stack([(pred==c).flatten(1).sum(1) for c in range(out.shape[1])], 1)
    want = torch.where(cnt[:,1:].sum(1)>0, cnt[:,1:].argmax(1)+1, 0)
    assert (SegTarget(None, mk).classes(out, get_vocab(seg))==want).all()
    l = unet_layer(seg)
    assert torch.equal(seg.gradcam(xb, layer=l, region=mk), seg.gradcam(xb, target=want, layer=l, region=mk))

def test_region_errors(seg, xb, learn, files):
    l = unet_layer(seg)
    with pytest.raises(TargetError, match='outside the 32×32 output'): seg.gradcam(xb, target=1, layer=l, region=(0,0,40,10))
    with pytest.raises(TargetError, match='empty'): seg.gradcam(xb, target=1, layer=l, region=(5,5,5,10))
    with pytest.raises(TargetError, match=r'output size \(32, 32\)'): seg.gradcam(xb, target=1, layer=l, region=torch.ones(16,16).bool())
    with pytest.raises(TargetError, match='3 boxes for 2 images'): seg.gradcam(xb, target=1, layer=l, region=[(0,0,4,4)]*3)
    with pytest.raises(TargetError, match='bool'): seg.gradcam(xb, target=1, layer=l, region=torch.full((SZ,SZ), 3))
    with pytest.raises(CAMError, match='aug_smooth'): seg.gradcam(xb, target=1, layer=l, region=(0,0,4,4), aug_smooth=True)
    # a classifier has no pixels to sum over
    s = snapshot(learn.model)
    with pytest.raises(TargetError, match='`region=` is for segmentation models'): learn.gradcam(files, region=(0,0,8,8))
    with pytest.raises(TargetError, match='`region=` is for segmentation models'): learn.show_gradcam(files[:1], region=(0,0,8,8))
    assert_same(learn.model, s)
    plt.close('all')

def test_classifier_unchanged(learn, files):
    "Classifier calls give what they gave before: the `[n, classes]` branch is untouched"
    mp,pr = learn.gradcam(files, target=1, with_preds=True)
    assert pr.ndim==2 and mp.ndim==3

def test_batch_equals_items_and_state(seg, xb):
    l = unet_layer(seg)
    s = snapshot(seg.model)
    for kw in (dict(), dict(target=1, region=(4,4,20,20))):
        b = seg.gradcam(xb, layer=l, **kw)
        one = torch.cat([seg.gradcam(xb[i:i+1], layer=l, **kw) for i in range(len(xb))])
        # float32: batched and single-item convolutions sum in different orders (as in test_learner's batch test)
        assert b.abs().max()>0 and rel_err(b, one) < 1e-4
    seg.guided_backprop(xb, target=1, region=(4,4,20,20))
    assert_same(seg.model, s)

def test_cam_is_head_error(seg, xb):
    with pytest.raises(HeadError, match='gradcam'): seg.cam(xb, target=1, layer=seg.model.layers[5])

def test_scorecam_says_what_to_use(seg, xb):
    with pytest.raises(TargetError, match='gradient method'): seg.heatmap(xb[:1], 'scorecam', target=1, layer=unet_layer(seg), max_channels=2)

def test_guided_backprop(seg, xb):
    g = seg.guided_backprop(xb, target=1)
    assert g.shape==xb.shape and g.dtype==torch.float32 and torch.isfinite(g).all() and g.abs().sum()>0
    # the score only reads the region's pixels: a box far from them changes the gradients
    assert not torch.allclose(g, seg.guided_backprop(xb, target=1, region=(0,0,8,8)))
    gg = seg.guided_gradcam(xb, target=1, layer=unet_layer(seg))
    assert gg.shape==xb.shape

def test_show_gradcam(seg, xb):
    axs = seg.show_gradcam(xb[:2], target='cross', layer=unet_layer(seg))
    assert [a.get_title().split(' / ')[0] for a in axs[:2]] == ['cross','cross']
    p = float(axs[0].get_title().split(' / ')[1])
    assert 0 <= p <= 1
    ax = seg.show_gradcam(xb[:1], target=1, layer=unet_layer(seg), region=(4,4,20,20))
    assert len(ax[0].collections) > 0   # the region's outline
    plt.close('all')

def test_get_cams(seg):
    l = unet_layer(seg)
    dl = seg.dls.valid
    maps,preds,targs = seg.get_cams(dl, target=1, layer=l)
    assert maps.shape==(len(dl.dataset),SZ//2,SZ//2) and preds.shape==(len(dl.dataset),5,SZ,SZ)
    xb = to_batch(seg, list(seg.dls.shapes.images[np.array(dl.items)]))
    assert (maps - seg.gradcam(xb, target=1, layer=l).cpu()).abs().max() < 1e-5

def test_callback(seg):
    torch.manual_seed(0)
    lrn = unet_learner(Shapes(8, size=SZ, seed=1).seg_dls(bs=4, valid_pct=0.25), resnet18, pretrained=False, n_out=5)  # its own: `fit` changes the weights
    cb = CAMCallback(n=2, layer=unet_layer(lrn))
    with lrn.no_bar(), lrn.no_logging(): lrn.fit(1, 1e-4, cbs=cb)
    h = lrn.cam_history
    assert h.epochs==[-1, 0] and h.maps.shape==(2,2,SZ//2,SZ//2) and h.probs.shape==(2,2,5)
    assert torch.allclose(h.probs.sum(-1), torch.ones(2,2))  # each class's share of the image
    # the classes explained are resolved the segmentation way: the most frequent non-background class of the last model
    assert torch.equal(h.targets[-1], resolve_target(None, _out(lrn, to_batch(lrn, list(lrn.dls.shapes.images[np.array(lrn.dls.valid.items[:2])]))), get_vocab(lrn)).cpu())
    h.show(); plt.close('all')
