"`fast_cam.evaluate`: `evaluate_cams`: the same numbers as the metric functions, batches and targets, user masks, boxes and methods, errors, state."
import numpy as np, pytest, torch
from fast_cam.all import *
from conftest import snapshot, assert_same

def test_evaluate_cams_on_shapes(slearn, sbatch):
    xb,maps,mk,bx = sbatch
    r = slearn.evaluate_cams(n=6, methods=['gradcam', 'uniform'], steps=4, bs=5, progress=False)
    assert list(r.df.index)==['gradcam','uniform'] and list(r.df.columns)==list(trust_metrics)
    it = r.items['gradcam']
    assert len(it)==6 and r.n==6
    # the same numbers as the functions themselves, on the same items
    np.testing.assert_allclose(it.pointing, pointing_game(maps, mk, 15/224*64).numpy())
    np.testing.assert_allclose(it.peak_in_mask, pointing_game(maps, mk).numpy())
    np.testing.assert_allclose(it.energy, energy_pointing_game(maps, mk).numpy(), atol=1e-6)
    np.testing.assert_allclose(it.box_iou, box_iou(cam_to_box(maps, 64), bx).numpy(), atol=1e-6)
    np.testing.assert_allclose(it.deletion, deletion(slearn, xb, maps, steps=4)[0].numpy(), atol=1e-5)
    assert r.df.loc['gradcam','avg_drop']==pytest.approx(drop_increase(slearn, xb, maps)[0].mean().item(), abs=1e-4)
    assert r.curves['gradcam']['insertion'].shape==(6, 5)
    assert r.df.loc['uniform','energy']==pytest.approx(mk.float().mean().item(), abs=1e-5)
    for k in ('pointing','energy','deletion'):  # means in float64, so that 19 hits of 20 is exactly 0.95
        assert r.df.loc['gradcam',k]==it[k].astype(np.float64).mean()
    assert 'pointing' in repr(r) and '<table' in r._repr_html_()
    r.plot_curves(); import matplotlib.pyplot as plt; plt.close('all')

def test_evaluate_cams_batches_and_targets(slearn):
    a = slearn.evaluate_cams(n=10, methods=['gradcam'], metrics=['pointing','energy','deletion'], steps=4, progress=False)
    dl = slearn.dls.valid.new(bs=3)                               # 10 items in batches of 3: the last is cut
    b = slearn.evaluate_cams(dl, n=10, methods=['gradcam'], metrics=['pointing','energy','deletion'], steps=4, progress=False)
    for k in ('pointing','energy','deletion'): np.testing.assert_allclose(b.items['gradcam'][k], a.items['gradcam'][k], atol=1e-5)
    c = slearn.evaluate_cams(n=10, methods=['gradcam'], metrics=['deletion'], steps=4, target='actual', progress=False)
    lbl = slearn.dls.shapes.labels[np.array(slearn.dls.valid.items[:10])]
    xb = to_batch(slearn, list(slearn.dls.shapes.images[np.array(slearn.dls.valid.items[:10])]))
    ref,_ = deletion(slearn, xb, slearn.gradcam(xb, target=list(lbl)), target=list(lbl), steps=4)
    np.testing.assert_allclose(c.items['gradcam'].deletion, ref.numpy(), atol=1e-5)

def test_evaluate_cams_user_masks_boxes_and_functions(learn, dls):
    dl = dls.valid
    n = len(dl.dataset)
    boxes = torch.tensor([[8,8,40,40]]*n)
    r = learn.evaluate_cams(dl, boxes=boxes, methods=['gradcam', GradCAMpp(), 'edge', lambda xb: xb.mean(1)],
                            metrics=['pointing','box_iou','insertion'], steps=2, progress=False)
    assert list(r.df.index)==['gradcam','gradcampp','edge','<lambda>']
    assert r.df.notna().all().all()
    r1 = learn.evaluate_cams(dl, boxes, methods=['gradcam'], metrics=['pointing','box_iou'], progress=False)  # boxes in the masks' place
    np.testing.assert_allclose(r1.items['gradcam'].box_iou, r.items['gradcam'].box_iou)
    masks = boxes_to_masks(boxes, 64)
    r2 = learn.evaluate_cams(dl, masks=masks, methods=['gradcam'], metrics=['pointing','box_iou'], progress=False)
    np.testing.assert_allclose(r2.items['gradcam'].pointing, r.items['gradcam'].pointing)
    np.testing.assert_allclose(r2.items['gradcam'].box_iou, r.items['gradcam'].box_iou)

def test_evaluate_cams_errors(learn, dls):
    with pytest.raises(TruthError, match='masks=.*boxes='): learn.evaluate_cams(progress=False)
    with pytest.raises(TruthError, match='for 4 items'): learn.evaluate_cams(boxes=torch.zeros(2,4), progress=False)
    with pytest.raises(CAMError, match='Unknown metric'): learn.evaluate_cams(metrics=['pointing_gam'], boxes=torch.zeros(4,4), progress=False)
    with pytest.raises(CAMError, match='Unknown method'): learn.evaluate_cams(methods=['gradcan'], metrics=['deletion'], progress=False)
    assert issubclass(TruthError, CAMError) and issubclass(TruthError, ValueError)
    r = learn.evaluate_cams(metrics=['deletion','avg_inc'], methods=['gradcam'], steps=2, progress=False)  # no truth needed
    assert list(r.df.columns)==['deletion','avg_inc']

def test_evaluate_cams_leaves_state(learn, dls):
    m = learn.model.train()
    xb,yb = learn.dls.one_batch()
    learn.loss_func(m(xb), yb).backward()
    s = snapshot(m)
    bx = torch.tensor([[8,8,40,40]]*4)
    learn.evaluate_cams(boxes=bx, methods=['gradcam','scorecam','guided_backprop'], metrics=['pointing','deletion','avg_drop'], steps=2,
                        method_kwargs={'scorecam': dict(max_channels=8)}, progress=False)
    assert_same(m, s)
    def boom(xb): raise RuntimeError('boom')
    with pytest.raises(RuntimeError, match='boom'): learn.evaluate_cams(boxes=bx, methods=['gradcam', boom], steps=2, progress=False)  # fails part-way
    assert_same(m, s)

def test_progress_follows_no_bar(slearn, capsys):
    with slearn.no_bar(): slearn.evaluate_cams(n=2, methods=['uniform'], metrics=['pointing'])
    assert '█' not in capsys.readouterr().out
    slearn.evaluate_cams(n=2, methods=['uniform'], metrics=['pointing'], progress=True)
    assert '█' in capsys.readouterr().out

def test_evaluate_cams_faithfulness_metrics(slearn):
    # the faithfulness metrics by name, one column each, equal to the functions' per-item values; not in the default
    assert not set(faithfulness_metrics) & set(trust_metrics)
    mkw = {'road': dict(percentiles=(20,80)), 'infidelity': dict(n_perturb=3), 'sensitivity': dict(n_perturb=2)}
    res = slearn.evaluate_cams(methods=['gradcam','uniform','random'], n=4, metrics=list(faithfulness_metrics),
                               metric_kwargs=mkw, progress=False)
    assert list(res.df.columns) == list(faithfulness_metrics) and np.isfinite(res.df.values).all()
    xb = slearn.dls.valid.new(shuffle=False).one_batch()[0][:4]
    maps = explain(slearn, xb, 'gradcam')
    comb,morf,lerf = road(slearn, xb, maps, percentiles=(20,80))
    np.testing.assert_allclose(res.items['gradcam']['road'].values, comb.cpu().numpy(), atol=1e-5)
    np.testing.assert_allclose(res.items['gradcam']['road_morf'].values, morf.mean(1).cpu().numpy(), atol=1e-5)
    np.testing.assert_allclose(res.items['gradcam']['keep_top'].values, keep_top(slearn, xb, maps).cpu().numpy(), atol=1e-5)
    # a map that ignores the input does not move: max-sensitivity 0 for the baselines
    assert (res.items['uniform']['sensitivity'].values == 0).all() and (res.items['random']['sensitivity'].values == 0).all()
    with pytest.raises(CAMError, match='road'): slearn.evaluate_cams(n=2, metrics=['roads'], progress=False)
