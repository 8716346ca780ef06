"`fast_cam.interpret`: `CAMInterpretation.plot_top_losses`: titles, losses, and one batched heatmap call for the whole grid."
import pytest, matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import fast_cam.interpret as fi
from fast_cam.all import *

def test_plot_top_losses_one_batched_call(trained, monkeypatch):
    with trained.no_bar(): interp = CAMInterpretation.from_learner(trained)
    calls = []
    orig = fi.explain
    def counting(*a, **k): calls.append(len(a[1])); return orig(*a, **k)
    monkeypatch.setattr(fi, 'explain', counting)
    k = 6
    axs = interp.plot_top_losses(k)
    titles = [a.get_title() for a in axs if a.images]
    main = [t for t in titles if not t.startswith('actual:')]
    n_wrong = sum(t.split('\n')[0].split('/')[0]!=t.split('\n')[0].split('/')[1] for t in main)
    assert len(main)==k and len(titles)==k+n_wrong
    assert calls==[k+n_wrong], 'one heatmap call for the k predicted-class maps and the actual-class maps'
    losses,idx = interp.top_losses(k)
    assert [float(t.split('\n')[1].split(' / ')[0]) for t in main]==pytest.approx(losses.tolist(), abs=0.006)
    axs = interp.plot_top_losses(k, show_actual=False)
    assert len([a for a in axs if a.images])==k
    axs = interp.plot_heatmaps([0,3], method='gradcam')
    assert len([a for a in axs if a.images and not a.get_title().startswith('actual')])==2
    plt.close('all')
