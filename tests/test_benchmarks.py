"The benchmark scripts run (--quick: tiny model, few images). Their timings are never asserted here."
import os, subprocess, sys, re
from pathlib import Path

ROOT = Path(__file__).parent.parent

def test_scorecam_benchmark_quick():
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'scorecam.py'), '--quick'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode==0, r.stderr[-2000:]
    assert '| fast_cam exact |' in r.stdout and '| torchcam |' in r.stdout and '| pytorch-grad-cam |' in r.stdout
    assert len(re.findall(r"\| fast_cam max_channels=\d+", r.stdout))==3*2, "3 rules × 2 channel counts"
    assert '| model | px | speed-up |' in r.stdout, 'the summary table'
    err = float(re.search(r'max abs difference ([\d.]+e[+-]\d+|[\d.]+\d)', r.stdout).group(1))
    assert err < 1e-4, 'the exact map agrees with torchcam'

def test_speed_benchmark_quick(tmp_path):
    out = tmp_path/'RESULTS.md'
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'speed.py'), '--quick', '--out', str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode==0, r.stderr[-2000:]
    s = r.stdout
    for t in ('### CAM (', '### Grad-CAM (', '### Grad-CAM++', '### LayerCAM', '### Guided backprop', '### Score-CAM', "### Top-losses grid"):
        assert t in s, t
    # every table has the reference, fast_cam and a ratio for each peer that implements the method
    for blk in s.split('### ')[1:]:
        head = next(l for l in blk.splitlines() if l.startswith('| |'))
        cols = [c.strip() for c in head.strip('|').split('|')]
        rows = {l.split('|')[1].strip(): [c.strip() for c in l.strip('|').split('|')] for l in blk.splitlines() if l.startswith('| ') and not l.startswith('| |')}
        assert 'reference' in rows and 'fast_cam' in rows
        peers = [c for c in cols if c.startswith('speed-up over')]
        assert peers and all(re.fullmatch(r'\d+\.\d+×', rows['fast_cam'][cols.index(c)]) for c in peers + ['× reference'])
    # the peak-memory subprocesses report a number for Grad-CAM
    gc = s.split('### Grad-CAM (')[1].split('###')[0]
    fc = [l for l in gc.splitlines() if l.startswith('| fast_cam |')][0]
    assert re.search(r'\| \d+ \|', fc), fc
    assert 'Spearman with exact' in s and 'max abs difference' in s
    assert not out.exists(), '--quick never writes the results file'

def test_speed_benchmark_only_merges(tmp_path):
    "--only replaces the sections of the cases it runs in an existing RESULTS.md and keeps the others as they were"
    out = tmp_path/'RESULTS.md'
    out.write_text("# fast_cam speed benchmark\n\nold header\n\n### CAM (resnet34, batch 16, 224 px)\n\nold CAM table\n\n"
                   "### Another case\n\nkept as it was\n")
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'speed.py'), '--only', 'cam', '--reps', '1', '--no-memory',
                        '--out', str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode==0, r.stderr[-2000:]
    s = out.read_text()
    assert 'old CAM table' not in s and '| fast_cam |' in s.split('### CAM (')[1] and 'Run alone on' in s
    assert 'old header' in s and s.index('### CAM (') < s.index('### Another case\n\nkept as it was')

def test_methods_benchmark_quick(tmp_path):
    "every case of benchmarks/peers/ runs against its peer and prints a time ratio and a ratio to Grad-CAM"
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'methods.py'), '--quick'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode==0, r.stderr[-3000:]
    rows = re.findall(r'^(\w+) +(pytorch-grad-cam|torchcam|captum) +ours .* ratio +([\d.]+)x +vs Grad-CAM +([\d.]+)x', r.stdout, re.M)
    assert len(rows)>=10 and all(float(t)>0 and float(g)>0 for *_,t,g in rows), r.stdout[-3000:]
    assert 'wrote ' not in r.stdout, '--quick never writes the results file'
