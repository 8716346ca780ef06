"""The property battery of `tests/test_properties.py` with hypothesis's long profile: 300 examples per test instead of CI's 12.

    python benchmarks/properties.py [pytest options, e.g. -k targets]

Not in CI (it takes about an hour on 2 cores); a failure prints the falsifying example and a `@reproduce_failure` line."""
import os, sys, subprocess
from pathlib import Path

if __name__=='__main__':
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, 'HYPOTHESIS_PROFILE': os.environ.get('HYPOTHESIS_PROFILE', 'long'), 'MPLBACKEND': 'Agg'}
    sys.exit(subprocess.call([sys.executable, '-m', 'pytest', '-q', str(root/'tests'/'test_properties.py'), *sys.argv[1:]], env=env, cwd=root))
