"`fast_cam.show`: overlays and the `show_*` grids, checked for what they draw, not only that they draw."
import pytest, torch, numpy as np, matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, PILImageBW, get_image_files, parent_label, Resize, RandomSplitter, vision_learner, resnet18
from fast_cam.all import *

def _pixels(ax):
    ax.figure.canvas.draw()
    return np.asarray(ax.figure.canvas.buffer_rgba())[...,:3].astype(int)

def test_overlay_differs_where_map_is_high():
    img = torch.full((3,32,32), .5)
    hm = torch.zeros(4,4); hm[0,0] = 1.
    _,(a0,a1) = plt.subplots(1, 2, figsize=(4,2))
    a0.imshow(to_hwc(img)); a0.axis('off')
    show_heatmap(img, hm, ax=a1, interpolation='nearest')
    px = _pixels(a1); plt.close('all')
    w = px.shape[1]//2
    left,right = px[:, :w],px[:, w:]
    # top-left of the right panel (map high) differs from the plain image; bottom-right (map 0) is darker but uniform
    b0 = [np.argwhere((p!=255).any(-1)) for p in (left,right)]
    (ly0,lx0),(ry0,rx0) = b0[0].min(0),b0[1].min(0)
    (ly1,lx1),(ry1,rx1) = b0[0].max(0),b0[1].max(0)
    hi = right[ry0+3, rx0+3]; lo = right[ry1-3, rx1-3]; plain = left[ly0+3, lx0+3]
    assert np.abs(hi-plain).sum() > 100 and np.abs(hi-lo).sum() > 100

def test_show_grid_titles_and_axes(trained):
    ds,items = trained.dls.shapes,list(trained.dls.valid.items[:5])
    axs = trained.show_gradcam(list(ds.images[items]), ncols=3)
    drawn = [a for a in axs if a.images]
    assert len(drawn)==5 and all(len(a.images)==2 for a in drawn), 'image + map in each panel'
    with trained.no_bar(): probs = trained.get_preds(dl=trained.dls.test_dl(list(ds.images[items])))[0]
    for a,p in zip(drawn, probs):
        lbl,pr = a.get_title().split(' / ')
        assert lbl==trained.dls.vocab[p.argmax()] and abs(float(pr)-float(p.max()))<0.006
    plt.close('all')

def test_show_side_by_side_target_and_methods_row(trained):
    img = trained.dls.shapes.images[trained.dls.valid.items[0]]
    axs = trained.show_gradcam(img, target='cross', merge=False)
    assert len(axs)==2 and axs[0].get_title().startswith('cross / ')
    axs = trained.show_heatmap(img, method=['cam','gradcam','guided_backprop','guided_gradcam'])
    assert [a.get_title() for a in axs]==['image','cam','gradcam','guided_backprop','guided_gradcam']
    ax = trained.show_guided_backprop(img, gray=True)[0]
    assert ax.images[0].get_array().ndim==2
    with pytest.raises(CAMError, match='one image'): trained.show_heatmap([img,img], method=['cam','gradcam'])
    plt.close('all')

def test_show_methods_return_axes(trained):
    img = trained.dls.shapes.images[trained.dls.valid.items[1]]
    for f in (trained.show_cam, trained.show_gradcam, trained.show_guided_backprop, trained.show_guided_gradcam):
        axs = f(img)
        assert len(axs)==1 and axs[0].images
    fig,ax = plt.subplots()
    assert trained.show_gradcam(img, ax=ax)[0] is ax
    plt.close('all')

def test_one_channel_non_square(shapes):
    "Grayscale images of 48x64 (not square) on a 1-channel model"
    dls = DataBlock(blocks=(ImageBlock(cls=PILImageBW), CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    splitter=RandomSplitter(0.25, seed=0), item_tfms=Resize((48,64))).dataloaders(shapes, bs=4, num_workers=0)
    l = vision_learner(dls, resnet18, pretrained=False, n_in=1)
    fs = get_image_files(shapes)[:3]
    assert l.gradcam(fs).shape==(3,12,16)  # layer1 at 48x64: layer2's 6x8 map is under 7 cells a side
    axs = l.show_gradcam(fs, colorbar=True)
    drawn = [a for a in axs if a.images]
    assert len(drawn)==3 and drawn[0].images[0].get_array().shape==(48,64)
    assert l.show_guided_backprop(fs[0])[0].images[0].get_array().shape==(48,64)
    plt.close('all')

def test_show_signatures_delegate():
    "The rendering options of `show_heatmap` show in every `show_*` signature, as fastai's `@delegates` does"
    import inspect
    from fastai.vision.all import Learner
    for n in ('show_cam','show_gradcam','show_guided_backprop','show_guided_gradcam'):
        ps = inspect.signature(getattr(Learner, n)).parameters
        assert {'alpha','cmap','figsize','ax','ncols'} <= set(ps), n
