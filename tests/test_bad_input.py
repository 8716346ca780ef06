"Promise 3: bad input gets a typed error (a ValueError subclass or TypeError) that says what to do."
import pytest, torch, numpy as np, pandas as pd
from torch import nn
from PIL import Image
from fastai.vision.all import vision_learner, resnet18
from fast_cam.all import *
from conftest import rel_err

def test_unknown_label(learn, files):
    with pytest.raises(TargetError, match="Unknown label 'sqare'. Did you mean 'square'"): learn.gradcam(files, target='sqare')

def test_label_without_vocab(learn, files):
    xb = to_batch(learn, files)
    with pytest.raises(TargetError, match='no vocab'): explain(learn.model, xb, target='square')

@pytest.mark.parametrize('t', [2, -3, 100])
def test_target_out_of_range(learn, files, t):
    with pytest.raises(TargetError, match='out of range: the model has 2 classes'): learn.gradcam(files, target=t)

@pytest.mark.parametrize('t', [[0,1], [0]*5, torch.tensor([1,0,1])])
def test_targets_wrong_length(learn, files, t):
    with pytest.raises(TargetError, match=f'targets for {len(files)} images'): learn.gradcam(files, target=t)

@pytest.mark.parametrize('t', [1.5, True, torch.tensor([0.,1,0,1]), {'a':1}])
def test_target_wrong_type(learn, files, t):
    with pytest.raises(TypeError, match='(?i)target'): learn.gradcam(files, target=t)

@pytest.mark.parametrize('layer,msg', [([0,9], 'index 9 is out of range'), ([0,7,5], r'model\[0, 7\] has 2 children'),
                                       ('0.layer4', 'no module named'), ('1.9', 'no module named')])
def test_bad_layer_path(learn, files, layer, msg):
    with pytest.raises(LayerError, match=msg): learn.gradcam(files, layer=layer)

def test_missing_dotted_name_hint():
    from torchvision.models import resnet18 as tv18
    m = tv18(weights=None)
    with pytest.raises(LayerError, match="Did you mean 'layer4'"): get_module(m, 'layr4')

def test_foreign_module(learn, files):
    with pytest.raises(LayerError, match='not part of this model'): learn.gradcam(files, layer=nn.Conv2d(3,3,1))

def test_bad_layer_type(learn, files):
    with pytest.raises(TypeError, match='layer'): learn.gradcam(files, layer=3.5)

@pytest.mark.parametrize('layer', [[1,-1], [1,0]])
def test_non_spatial_layer(learn, files, layer):
    "The head's Linear (2-D output) and its pooling (1x1) have no spatial map"
    with pytest.raises(LayerError, match='spatial output'): learn.gradcam(files, layer=layer)
    with pytest.raises(LayerError, match='spatial output'): learn.guided_gradcam(files, layer=layer)

def test_cam_needs_gap_head(learn, files):
    with pytest.raises(HeadError, match=r"learn.gradcam\(x\).*concat_pool=False, lin_ftrs=\[\]"): learn.cam(files)

def test_cam_on_wrong_layer(cam_learn, files):
    with pytest.raises(HeadError, match='GAP'): cam_learn.cam(files, layer=[0,6])

def test_cam_functional_relu_head():
    "torchvision's densenet applies F.relu between the features and the pooling: CAM on 'features' is refused"
    from torchvision.models import densenet121
    m = densenet121(weights=None, num_classes=3).eval()
    with pytest.raises(HeadError, match='functional ReLU'): explain(m, torch.randn(1,3,64,64), 'cam', layer='features')

@pytest.mark.parametrize('method', ['eigencam', 'guided_backprop', 'guided_gradcam', 'scorecam'])
def test_target_all_refused(learn, files, method):
    "Methods with one target per item refuse target='all' and say which methods take it"
    with pytest.raises(TargetError, match="supported by cam, eigengradcam, gradcam"):
        learn.heatmap(files, method=method, target='all')

def test_unknown_method(learn, files):
    with pytest.raises(CAMError, match="Did you mean 'gradcam'"): learn.heatmap(files, method='gradcma')

def test_non_image_learner(tmp_path):
    from fastai.tabular.all import TabularDataLoaders, tabular_learner, Categorify, Normalize
    df = pd.DataFrame({'a':np.random.rand(40), 'b':np.random.choice(['x','y'],40), 'y':np.random.choice(['p','q'],40)})
    tl = tabular_learner(TabularDataLoaders.from_df(df, procs=[Categorify, Normalize], cat_names=['b'], cont_names=['a'], y_names='y', bs=8))
    with pytest.raises(InputError, match='not an image model'): tl.gradcam(torch.randn(2,3,32,32))
    with pytest.raises(InputError, match='not an image model'): tl.gradcam('x.png')

def test_missing_file(learn, files, tmp_path):
    with pytest.raises(MissingFileError, match='not found'): learn.gradcam([files[0], tmp_path/'nope.jpg'])
    with pytest.raises(FileNotFoundError): learn.gradcam(str(tmp_path/'nope.jpg'))

def test_corrupt_file(learn, tmp_path):
    p = tmp_path/'bad.jpg'; p.write_bytes(b'not a jpeg at all')
    with pytest.raises(InputError, match='corrupt or not an image'): learn.gradcam(p)

@pytest.mark.parametrize('x', [[], (), torch.zeros(0,3,64,64)])
def test_empty(learn, x):
    with pytest.raises(InputError, match='empty'): learn.gradcam(x)

@pytest.mark.parametrize('shape', [(64,64), (1,1,3,64,64), (3,)])
def test_wrong_rank(learn, shape):
    with pytest.raises(InputError, match=r'\[n,c,H,W\]'): learn.gradcam(torch.randn(*shape))

def test_wrong_channels(learn):
    with pytest.raises(InputError, match='3-channel images but the input has 1'): learn.gradcam(torch.randn(2,1,64,64))
    with pytest.raises(InputError, match='3-channel'): learn.gradcam(torch.randn(2,64,64,3))

@pytest.mark.parametrize('dt', [torch.uint8, torch.int64, torch.bool])
def test_integer_tensor(learn, dt):
    with pytest.raises(TypeError, match='normalised float batch'): learn.gradcam(torch.zeros(2,3,64,64, dtype=dt))

@pytest.mark.parametrize('v', [float('nan'), float('inf')])
def test_nan_input(learn, v):
    x = torch.randn(2,3,64,64); x[1,0,3,3] = v
    with pytest.raises(InputError, match='NaN or infinite'): learn.gradcam(x)

def test_bad_item_type(learn):
    # not a path, image or array: the item goes to `dls.test_dl` as it is (as in `learn.predict`), which cannot read it
    with pytest.raises(InputError, match='test_dl.*dict items'): learn.gradcam([{'a':1}])

def test_bad_numpy(learn):
    with pytest.raises(InputError, match='numpy image'): learn.gradcam(np.zeros((4,4,4,4), dtype=np.uint8))

class TupleNet(nn.Module):
    "A model returning (logits, features), as detection and multi-head models do"
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.ReLU(), nn.Conv2d(8,8,3,padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 4)
    def forward(self, x):
        f = self.body(x)
        return self.fc(f.mean((2,3))), f

def test_tuple_output_needs_callable():
    m,x = TupleNet().eval(),torch.randn(2,3,16,16)
    with pytest.raises(TargetError, match='returns tuple.*target=f'): explain(m, x)
    maps = explain(m, x, target=lambda o: o[0][:,2])
    ref = explain(nn.Sequential(m.body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), m.fc), x, target=2, layer='0')
    assert rel_err(maps, ref) < 1e-5

def test_callable_target_bad_return(learn, files):
    with pytest.raises(TargetError, match='one score per item'): learn.gradcam(files, target=lambda o: o)
    with pytest.raises(TargetError, match='one score per item'): learn.gradcam(files, target=lambda o: o[:2,0])

def test_bare_model_with_paths(learn, files):
    with pytest.raises(InputError, match='bare model'): explain(learn.model, files)

@pytest.mark.parametrize('mode', ['L', 'RGBA', 'P', 'I;16'])
def test_grayscale_rgba_converted(learn, files, tmp_path, mode):
    "Files of other modes are converted to the model's mode, not rejected"
    im = Image.open(files[0]).convert('RGB')
    conv = im.convert(mode if mode!='I;16' else 'L')
    if mode=='I;16': conv = Image.fromarray(np.array(conv).astype(np.uint16)*256)
    p = tmp_path/f'x_{mode.replace(";","")}.png'; conv.save(p)
    assert Image.open(p).mode!='RGB'
    ref = learn.gradcam(Image.open(p).convert('RGB'))
    got = learn.gradcam(p)
    assert got.shape==ref.shape==(1,8,8) and torch.allclose(got, ref, atol=1e-6)
    assert torch.allclose(learn.gradcam(Image.open(p)), ref, atol=1e-6)
