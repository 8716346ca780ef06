"`learn.cam_report`: one self-contained HTML file, read back with `html.parser` and rendered in headless Chromium."
import base64, io, re, shutil, subprocess, copy, pytest, torch, numpy as np
from html.parser import HTMLParser
from pathlib import Path
from PIL import Image
from fast_cam.all import *
from fast_cam.report import _sections, _sec_shortcuts, _Drawer
from fast_cam.metrics import TruthError
from conftest import snapshot, assert_same

N,K,NEX,NPAIR,NPER = 96,6,4,3,2

class Page(HTMLParser):
    "The `<img>` sources, section ids, references out of the page and the text of an HTML page"
    def __init__(self, s):
        super().__init__(); self.srcs,self.ids,self.refs,self.tags,self.text = [],[],[],[],[]
        self.feed(s)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs); self.tags.append(tag)
        if tag=='img': self.srcs.append(a.get('src', ''))
        if tag=='section': self.ids.append(a.get('id'))
        self.refs += [v for k,v in attrs if k in ('href','src','action','srcset','poster') and v
                      and not v.startswith(('#','data:'))]
    def handle_data(self, d): self.text.append(d)
    @property
    def all_text(self): return ' '.join(self.text)

@pytest.fixture(scope='module')
def rep(slearn, tmp_path_factory):
    "A report on 96 validation items (a labelled `test_dl` of `Shapes` indices), and the model's state before and after"
    dl = slearn.dls.test_dl(list(slearn.dls.valid.items[:N]), with_labels=True)
    before,cbs = snapshot(slearn.model),[type(c) for c in slearn.cbs]
    f = tmp_path_factory.mktemp('report')/'sub'/'report.html'
    with slearn.no_bar():
        out = slearn.cam_report(f, dl=dl, k=K, n_exemplars=NEX, n_pairs=NPAIR, n_per_pair=NPER, n_trust=8, n_sanity=4)
    return out, before, cbs, dl, snapshot(slearn.model), [type(c) for c in slearn.cbs]

def test_file_and_images(rep):
    f = rep[0]
    assert f.exists() and f.suffix=='.html'
    pg = Page(f.read_text(encoding='utf-8'))
    assert len(pg.srcs)>=K
    assert len(rep[3].dataset)==N
    for s in pg.srcs:
        m = re.fullmatch(r'data:image/(jpeg|png);base64,([A-Za-z0-9+/=]+)', s)
        assert m, s[:60]
        im = Image.open(io.BytesIO(base64.b64decode(m.group(2)))); im.load()
        assert im.format.lower()==m.group(1) and min(im.size)>=32

def test_self_contained(rep):
    s = rep[0].read_text(encoding='utf-8')
    pg = Page(s)
    assert pg.refs==[]
    bare = re.sub(r'data:image/[a-z]+;base64,[A-Za-z0-9+/=]+', '', s)  # base64 may hold '//'
    assert not re.search(r'https?:|file:|ftp:|//[a-z]', bare, re.I)
    for t in ('script','link','iframe','object','embed'): assert t not in pg.tags
    assert 'url(' not in s and '@import' not in s
    assert '<meta name="viewport"' in s

def test_sections_in_order(slearn, rep):
    pg = Page(rep[0].read_text(encoding='utf-8'))
    assert pg.ids==['shortcuts','summary','top-losses','classes','confusions','trust']
    t = pg.all_text
    for w in ('Accuracy','Why this layer','Input size','recall','Randomisation check','deletion','insertion',
              'pointing','spearman','mean map'): assert w in t, w
    # the layer named is the automatic one
    assert re.search(r'Layer\s+' + re.escape(module_name(slearn.model, cam_layer(slearn))) + r'\s', t)

def test_figures_match_the_model(slearn, rep):
    "Accuracy, per-class recall and the top losses, against `get_preds` computed here"
    dl = rep[3]
    with slearn.no_bar(): p,t = slearn.get_preds(dl=dl)
    pred = p.argmax(1)
    t_ = Page(rep[0].read_text(encoding='utf-8')).all_text
    acc = float(re.search(r'Accuracy\s+([0-9.]+)', t_).group(1))
    assert abs(acc - float((pred==t).float().mean()))<5e-4
    for c,v in enumerate(slearn.dls.vocab):
        r = float(re.search(rf'{v}\s+\d+\s+([0-9.]+)', t_).group(1))
        assert abs(r - float((pred[t==c]==c).float().mean()))<5e-4, v
    loss = -p.gather(1, t[:,None])[:,0].log()
    shown = [int(i) for i in re.findall(r'item (\d+): ', t_)][:K]
    assert shown==loss.argsort(descending=True)[:K].tolist()

def test_size_capped(rep):
    "A fixed number of thumbnails whatever the number of items: the file stays small"
    f = rep[0]
    n_img = len(Page(f.read_text(encoding='utf-8')).srcs)
    assert n_img <= 2*K + 4*(1+NEX) + 2*NPAIR*NPER
    assert f.stat().st_size < 400_000

def test_state_untouched(rep):
    "Parameters, `.grad`, training flags, `requires_grad`, hooks and the Learner's callbacks: all as before"
    _,before,cbs,_,after,cbs_after = rep
    for k,v in before['state'].items(): assert torch.equal(v, after['state'][k]), k
    for k in ('grads','rg','training','grad_mode','inference','hooks'): assert before[k]==after[k] if k!='grads' else \
        all((v is None)==(after[k][n] is None) for n,v in before[k].items()), k
    assert cbs_after==cbs

def test_labels_for_an_unlabelled_dl(slearn, tmp_path):
    "A `test_dl` without labels needs `labels=`; with them, the report is as for the labelled items"
    sh,items = slearn.dls.shapes,list(slearn.dls.valid.items[:24])
    dl = slearn.dls.test_dl([sh.images[i] for i in items])
    with slearn.no_bar():
        with pytest.raises(TargetError, match='with_labels=True'): slearn.cam_report(tmp_path/'a.html', dl=dl)
        f = slearn.cam_report(tmp_path/'b.html', dl=dl, labels=[sh.vocab[sh.labels[i]] for i in items], k=3,
                              n_trust=0, n_sanity=0, shortcuts=False)
    t = Page(f.read_text(encoding='utf-8')).all_text
    assert 'Turned off' in t and 'Not scored' in t
    assert not (tmp_path/'a.html').exists()

@pytest.mark.parametrize('kw,err,msg', [
    (dict(k=-1), CAMError, 'at least 0'),
    (dict(k=1.5), CAMTypeError, 'must be an int'),
    (dict(thumb=8), CAMError, 'between 32 and 512'),
    (dict(method='gradcamm'), CAMError, 'Did you mean'),
    (dict(fname=3), CAMTypeError, 'str or Path'),
    (dict(masks=np.zeros((5,64,64), bool)), TruthError, '5 masks or boxes for 16 items'),
    (dict(labels=['circle']*16+['dog']), TargetError, '17 labels for 16 items'),
    (dict(labels=['dog']*16), TargetError, 'in the vocab'),
    (dict(dl=[1,2,3]), CAMTypeError, 'fastai DataLoader'),
])
def test_bad_arguments(slearn, tmp_path, kw, err, msg):
    kw = {'fname': tmp_path/'r.html', 'dl': slearn.dls.valid.new(n=16), **kw}
    s = snapshot(slearn.model)
    with pytest.raises(err, match=msg): slearn.cam_report(**kw)
    assert_same(slearn.model, s)
    assert not (tmp_path/'r.html').exists()

def test_shortcut_findings_drawn(slearn):
    "Each finding shows its class, kind, region, evidence, mean map and (capped) items"
    from types import SimpleNamespace
    dl = slearn.dls.valid.new(shuffle=False)
    fd = SimpleNamespace(cls='square', kind='same_place', region='top-left corner', score=.8, threshold=.5,
                         evidence='The mean map peaks in the top-left corner on 80% of the items.',
                         items=list(range(10)), mean_map=torch.rand(8,8))
    dr = _Drawer(slearn, dl, torch.rand(dl.n,8,8), False, 64, 70)
    s = _sec_shortcuts(SimpleNamespace(findings=[fd]), dr, slearn.dls.vocab, 3, torch.full((3,64,64), .5))
    t = Page(s).all_text
    assert 'square' in t and 'top-left corner' in t and '80% of the items' in t and 'score 0.80' in t
    assert s.count('<img')==1+3

def test_shortcuts_in_report_when_available(slearn, rep):
    "Once `fast_cam.shortcuts` exists its section holds its findings, not the placeholder"
    try: import fast_cam.shortcuts  # noqa
    except ModuleNotFoundError: pytest.skip('fast_cam.shortcuts is not in this install')
    t = Page(rep[0].read_text(encoding='utf-8')).all_text
    assert 'No shortcut check available' not in t
    assert 'No shortcut found' in t or 'possible shortcut' in t

# --- headless Chromium ---------------------------------------------------------------------------------------------
CHROME = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
_probe = """<script>window.addEventListener('load', () => {
  const ims = [...document.images], ok = ims.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = 'probe:' + ok + '/' + ims.length + '/' + document.documentElement.scrollWidth + '/' + innerWidth;
  console.log('fast_cam-probe');
});</script>"""

def _render(f, width, extra=''):
    "Render `f` in headless Chromium: `(images loaded, images, page width, window width)`, console lines"
    s = f.read_text(encoding='utf-8').replace('</body>', extra + _probe + '</body>')
    g = f.with_name(f'probe_{width}.html'); g.write_text(s, encoding='utf-8')
    r = subprocess.run([CHROME, '--headless', '--no-sandbox', '--disable-gpu', '--enable-logging=stderr', '--v=0',
                        '--virtual-time-budget=10000', f'--window-size={width},2400', '--dump-dom', g.as_uri()],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r'<title>probe:(\d+)/(\d+)/(\d+)/(\d+)</title>', r.stdout)
    assert m, r.stderr[-2000:]
    return tuple(map(int, m.groups())), [l for l in r.stderr.splitlines() if ':CONSOLE' in l]

@pytest.mark.skipif(CHROME is None, reason='no Chromium on this machine (the headless render check needs one)')
@pytest.mark.parametrize('width', [1280, 390])
def test_renders_in_chromium(rep, width):
    "Every image loads, nothing is logged to the console but the probe, and the page fits the window's width"
    # a broken image beside them shows that the count can fail
    (ok,n,sw,iw),console = _render(rep[0], width, '<img src="data:image/png;base64,AAAA">')
    assert n==len(Page(rep[0].read_text(encoding='utf-8')).srcs)+1
    assert ok==n-1
    assert len(console)==1 and 'fast_cam-probe' in console[0], console
    assert sw<=iw, f'the page is {sw} px wide in a {iw} px window'

def test_layer_reason_names_the_layers_read(slearn, sbatch):
    "The report's layer line names the layers each method reads by default: one stage, several, or none"
    from fast_cam.report import layer_reason
    xb = sbatch[0][:2]
    ls,why = layer_reason(slearn, 'gradcam', None, xb)
    assert ls==[cam_layer(slearn, xb)] and 'automatic rule' in why
    ls,why = layer_reason(slearn, 'layercam_fused', None, xb)
    assert len(ls)>1 and [id(o) for o in ls]==[id(o) for o in get_method('layercam_fused').read_layers(slearn.model, xb)]
    assert 'stages' in why
    assert layer_reason(slearn, 'saliency', None, xb)==([], "saliency works on the input's gradients: it reads no layer")
