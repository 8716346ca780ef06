"""The README's picture of a report: `learn.cam_report` on the demo model trained with a mark in one corner of every
training circle, opened in headless Chromium, the top of the page saved as nbs/images/report.png.

    python tools/report_screenshot.py [--out nbs/images/report.png]"""
import argparse, subprocess, tempfile, shutil, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
from fast_cam.all import *

p = argparse.ArgumentParser()
p.add_argument('--out', default=str(Path(__file__).parents[1]/'nbs'/'images'/'report.png'))
a = p.parse_args()
learn = shapes_learner(mark='circle', cache=True)
d = Path(tempfile.mkdtemp())
with learn.no_bar(): learn.cam_report(d/'report.html', title='fast_cam report: a model with a planted shortcut')
chrome = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
subprocess.run([chrome, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', f'--screenshot={a.out}',
                '--window-size=900,1140', (d/'report.html').as_uri()], check=True, capture_output=True)
from PIL import Image
Image.open(a.out).convert('RGB').quantize(256).save(a.out, optimize=True)  # a palette: the docs stay light
print(f'wrote {a.out}')
