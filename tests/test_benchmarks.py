"The benchmark scripts run (--quick: tiny model, few images). Their timings are never asserted here."
import subprocess, sys, re
from pathlib import Path

ROOT = Path(__file__).parent.parent

def test_scorecam_benchmark_quick():
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'scorecam.py'), '--quick'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode==0, r.stderr[-2000:]
    assert '| fast_cam exact |' in r.stdout and '| torchcam |' in r.stdout and '| pytorch-grad-cam |' in r.stdout
    assert len(re.findall(r"\| fast_cam max_channels=\d+", r.stdout))==16
    err = float(re.search(r'max abs difference ([\d.]+e[+-]\d+|[\d.]+\d)', r.stdout).group(1))
    assert err < 1e-4, 'the exact map agrees with torchcam'
