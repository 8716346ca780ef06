"`fast_cam.inputs`: paths, PIL images, arrays, tensors, `(xb, yb)` tuples and items in the data set's own form (indices, DataFrame rows) give the same batch."
import pytest, torch, numpy as np, pandas as pd
from PIL import Image
from fastai.vision.all import PILImage, DataBlock, ImageBlock, CategoryBlock, ColReader, Resize, Learner, L
from fast_cam.all import *
from conftest import rel_err

def test_inputs_agree(learn, files):
    "Paths, str, PIL, numpy, a tensor batch, one [c,H,W] image, a list of tensors and an (xb, yb) tuple give the same maps"
    xb = to_batch(learn, files)
    ref = learn.gradcam(xb)
    assert torch.equal(learn.gradcam(files), ref)
    assert torch.equal(learn.gradcam([str(f) for f in files]), ref)
    ims = [Image.open(f) for f in files]
    assert torch.allclose(learn.gradcam(ims), ref)
    assert all(type(o) is not PILImage for o in ims), "the user's PIL images are not recast"
    assert torch.allclose(learn.gradcam([np.array(Image.open(f)) for f in files]), ref)
    assert torch.allclose(learn.gradcam(list(xb)), ref)
    assert torch.allclose(learn.gradcam((xb, torch.zeros(len(xb)))), ref)
    assert torch.allclose(learn.gradcam(xb[1]), ref[1:2])

def test_one_batch_tuple(learn):
    b = learn.dls.one_batch()
    assert learn.gradcam(b).shape==(len(b[0]),8,8)

# items in the data set's own form
@pytest.fixture(scope='module')
def shapes_learn():
    "The package's `Shapes` learner (items are indices), untrained: only the input pipeline matters here"
    return shapes_learner(n=24, epochs=0, bs=8)

def test_index_items(shapes_learn):
    l = shapes_learn
    ref = l.gradcam(l.dls.test_dl([3,7]).one_batch()[0], target=[0,1])
    assert ref.abs().max()>0
    for x in ([3,7], (3,7), L(3,7), np.array([3,7])):
        assert torch.equal(l.gradcam(x, target=[0,1]), ref)
    assert rel_err(l.gradcam(3, target=0), ref[:1]) < 1e-5
    # the same images given as arrays
    assert rel_err(l.gradcam(list(l.dls.shapes.images[[3,7]]), target=[0,1]), ref) < 1e-6
    # `predict`'s probabilities for the same item
    _,probs = l.gradcam(5, with_preds=True)
    assert torch.allclose(probs[0], l.predict(5)[2], atol=1e-5)

def test_items_errors(shapes_learn, learn):
    with pytest.raises(InputError, match='bare model'): explain(shapes_learn.model, [3,7])
    # a folder learner reads paths: an index is not one of its items
    with pytest.raises(InputError, match='test_dl.*int items'): learn.gradcam([3,7])
    with pytest.raises(InputError, match='test_dl.*dict items'): learn.gradcam([{'a':1}])

@pytest.fixture(scope='module')
def df_learn(shapes):
    "A DataBlock over DataFrame rows: `get_x` reads a column"
    fs = sorted(shapes.glob('*/*.png'))
    df = pd.DataFrame({'fname': [f'{f.parent.name}/{f.name}' for f in fs], 'label': [f.parent.name for f in fs]})
    db = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ColReader('fname', pref=f'{shapes}/'), get_y=ColReader('label'), item_tfms=Resize(32))
    torch.manual_seed(0)
    return Learner(db.dataloaders(df, bs=4, num_workers=0), shapes_cnn(2, nf=8)), df

def test_dataframe_rows(df_learn, shapes):
    l,df = df_learn
    ref = l.gradcam([shapes/df.fname[0], shapes/df.fname[9]], target=[0,1])
    assert ref.abs().max()>0
    assert torch.equal(l.gradcam([df.iloc[0], df.iloc[9]], target=[0,1]), ref)
    assert torch.equal(l.gradcam(df.iloc[[0,9]], target=[0,1]), ref)
    with pytest.raises(InputError, match='empty'): l.gradcam(df.iloc[:0])
