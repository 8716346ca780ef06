"""Check the built docs site (`_site/`, from `mkdocs build --strict -f docs/mkdocs.yml`).

    python tools/check_site.py [--site _site] [--shots DIR] [--no-browser]

1. Every notebook in nbs/ has its page, and the main entry points have API reference entries.
2. Every internal link, picture, script and stylesheet of every page resolves, `#anchors` included.
3. The main pages open in headless Chromium (Debian's `chromium`, driven over the DevTools protocol with
   `websocket-client`) served from localhost: each must log no console error, no uncaught exception and no failed
   request, render a screenshot that is not blank (saved to `--shots`), and the maths page must typeset its maths.
Exits non-zero with a list of what failed.
"""
import argparse, base64, functools, http.server, io, json, os, re, shutil, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path
from urllib.parse import urlsplit, unquote
from bs4 import BeautifulSoup

root = Path(__file__).resolve().parent.parent
# name -> (page, anchor): the entry points the README sends readers to
ENTRIES = {'GradCAM': ('methods.html', 'gradcam'), 'Learner.gradcam': ('learner.html', 'learner.gradcam'),
           'Learner.show_gradcam': ('show.html', 'learner.show_gradcam'),
           'CAMInterpretation.plot_top_losses': ('interpret.html', 'caminterpretation.plot_top_losses'),
           'Learner.get_cams': ('gather.html', 'learner.get_cams'),
           'cam_layer': ('layers.html', 'cam_layer'), 'CAMCallback': ('callback.html', 'camcallback')}
MAIN = ['index.html', 'tutorial.html', 'layers.html', 'learner.html', 'show.html', 'interpret.html', 'methods.html']

def _page_of(nb):
    "The page nbdev names notebook `nb` (its `output-file`, or the name less its number)"
    if nb.stem=='index': return 'index.html'
    return re.sub(r'^\d+[a-z]?_', '', nb.stem)+'.html'

@functools.lru_cache(None)
def _ids(p):
    return {t['id'] for t in BeautifulSoup(p.read_text(errors='replace'), 'html.parser').find_all(id=True)}

def check_pages(site):
    errs = []
    for nb in sorted((root/'nbs').glob('*.ipynb')):
        if not (site/_page_of(nb)).exists(): errs.append(f'no page for {nb.name} ({_page_of(nb)})')
    for name,(page,anchor) in ENTRIES.items():
        p = site/page
        if not p.exists() or anchor not in _ids(p): errs.append(f'no reference entry for {name} ({page}#{anchor})')
    idx = json.loads((site/'search/search_index.json').read_text())
    if not any('gradcam' in d.get('location','') for d in idx['docs']): errs.append('the search index has no `gradcam` entry')
    return errs

def check_links(site):
    "Broken internal references in every page: (page, target) pairs"
    errs = []
    for p in sorted(site.rglob('*.html')):
        if 'assets' in p.relative_to(site).parts or p.name=='404.html': continue  # 404.html links from the site's root URL
        soup = BeautifulSoup(p.read_text(errors='replace'), 'html.parser')
        for tag,attr in (('a','href'),('img','src'),('script','src'),('link','href')):
            for t in soup.find_all(tag):
                u = t.get(attr)
                if not u or u.startswith(('data:', 'mailto:', 'javascript:')): continue
                s = urlsplit(u)
                if s.scheme or s.netloc: continue
                tgt = (p.parent/unquote(s.path)).resolve() if s.path else p
                if tgt.is_dir(): tgt = tgt/'index.html'
                rel = p.relative_to(site)
                if not tgt.exists(): errs.append(f'{rel}: {u} (no such file)'); continue
                if s.fragment and tgt.suffix=='.html' and unquote(s.fragment) not in _ids(tgt):
                    errs.append(f'{rel}: {u} (no such anchor)')
    return errs

def _serve(site):
    "Serve `site` on a free localhost port in a thread; returns the base URL"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    h = functools.partial(Quiet, directory=str(site))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f'http://127.0.0.1:{srv.server_address[1]}/'

class _CDP:
    "A minimal DevTools-protocol client over one page target"
    def __init__(self, ws_url):
        import websocket
        self.ws,self.n,self.events = websocket.create_connection(ws_url, timeout=60, suppress_origin=True),0,[]
        self.sid = None
        tid = self.call('Target.createTarget', url='about:blank')['targetId']
        self.sid = self.call('Target.attachToTarget', targetId=tid, flatten=True)['sessionId']
    def call(self, method, **params):
        self.n += 1; i = self.n
        msg = dict(id=i, method=method, params=params)
        if self.sid: msg['sessionId'] = self.sid
        self.ws.settimeout(60)
        self.ws.send(json.dumps(msg))
        while True:
            r = json.loads(self.ws.recv())
            if r.get('id')==i:
                if 'error' in r: raise RuntimeError(f'{method}: {r["error"]}')
                return r.get('result', {})
            if 'method' in r: self.events.append(r)
    def wait(self, method, timeout=30):
        "Wait for event `method` (returns it), keeping the others"
        end = time.time()+timeout
        for e in self.events:
            if e['method']==method: return e
        while time.time()<end:
            self.ws.settimeout(max(0.1, end-time.time()))
            try: r = json.loads(self.ws.recv())
            except Exception: break
            if 'method' in r:
                self.events.append(r)
                if r['method']==method: return r
        raise TimeoutError(method)
    def drain(self, secs):
        end = time.time()+secs
        while time.time()<end:
            self.ws.settimeout(max(0.05, end-time.time()))
            try: r = json.loads(self.ws.recv())
            except Exception: continue
            if 'method' in r: self.events.append(r)

def _mathjax_probe(text, url=''):
    "MathJax 2's HTML-CSS output measures a `MathJax_Blank` font whose source is `about:blank`: Chromium logs its refusal"
    return url=='about:blank' or "font at 'about:blank'" in text

def _problems(events):
    "Console errors, exceptions and failed requests among DevTools `events`"
    res,urls = [],{}
    for e in events:
        m,p = e['method'],e.get('params', {})
        if m=='Network.requestWillBeSent': urls[p['requestId']] = p['request']['url']
        if m=='Runtime.exceptionThrown': res.append('exception: '+p['exceptionDetails'].get('exception', {}).get('description', p['exceptionDetails'].get('text', '')))
        elif m=='Runtime.consoleAPICalled' and p['type'] in ('error','assert'):
            res.append('console.error: '+' '.join(str(a.get('value', a.get('description', ''))) for a in p['args']))
        elif m=='Log.entryAdded' and p['entry']['level']=='error':
            if _mathjax_probe(p['entry']['text'], p['entry'].get('url', '')): continue
            res.append(f"log: {p['entry']['text']} {p['entry'].get('url','')}")
        elif m=='Network.loadingFailed' and not p.get('canceled'):
            if _mathjax_probe('', urls.get(p['requestId'], '')): continue
            res.append(f"request failed: {p.get('errorText')} {urls.get(p['requestId'], '')}")
        elif m=='Network.responseReceived' and p['response']['status']>=400: res.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
    return res

def _blank(png):
    "Is the screenshot (nearly) one colour?"
    from PIL import Image
    im = Image.open(io.BytesIO(png)).convert('L')
    hist = im.histogram()
    return max(hist) > 0.995*sum(hist)

def _chromium():
    for b in ('chromium', 'chromium-browser', 'google-chrome'):
        if shutil.which(b): return shutil.which(b)
    raise SystemExit("no Chromium: install Debian's `chromium` (apt-get install -y chromium)")

def check_browser(site, shots, pages=MAIN):
    errs,base = [],_serve(site)
    shots.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp()
    args = [_chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
            f'--user-data-dir={tmp}', '--remote-debugging-port=0', '--remote-allow-origins=*', '--window-size=1280,900', 'about:blank']
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        f = Path(tmp)/'DevToolsActivePort'
        for _ in range(300):
            if f.exists() and len(f.read_text().split())>=2: break
            time.sleep(0.1)
        else: raise SystemExit('Chromium did not start')
        port,path = f.read_text().split()[:2]
        cdp = _CDP(f'ws://127.0.0.1:{port}{path}')
        for d in ('Page','Runtime','Log','Network'): cdp.call(f'{d}.enable')
        cdp.call('Emulation.setDeviceMetricsOverride', width=1280, height=900, deviceScaleFactor=1, mobile=False)
        for page in pages:
            cdp.events.clear()
            cdp.call('Page.navigate', url=base+page)
            cdp.wait('Page.loadEventFired')
            cdp.drain(1.5)  # MathJax typesets after the load event
            ev = lambda js: cdp.call('Runtime.evaluate', expression=js, returnByValue=True)['result'].get('value')
            for _ in range(40):  # until MathJax's queue is empty (pages without maths: at once)
                if ev("!window.MathJax || !MathJax.Hub || MathJax.Hub.queue.pending==0 && !MathJax.Hub.queue.running"): break
                cdp.drain(0.25)
            png = base64.b64decode(cdp.call('Page.captureScreenshot', format='png')['data'])
            (shots/page.replace('.html', '.png')).write_bytes(png)
            probs = []
            if _blank(png): probs.append('blank screenshot')
            if not ev("!!document.querySelector('.jp-Notebook')"): probs.append('no notebook content')
            nmath,nerr = ev("[document.querySelectorAll('.MathJax,.MathJax_CHTML,mjx-container').length, document.querySelectorAll('.MathJax_Error,merror').length]")
            if page=='methods.html' and not nmath: probs.append('no typeset maths')
            if nerr: probs.append(f'{nerr} MathJax errors')
            nhits = None
            if page=='index.html':  # search: type a name, expect hits from the search worker
                ev("document.querySelector('.md-search__input').focus()")
                cdp.call('Input.insertText', text='gradcam')
                for _ in range(240):  # the search worker indexes the whole site first: up to a minute on a busy 2-core machine
                    ev("document.querySelector('.md-search__input').dispatchEvent(new KeyboardEvent('keyup'))")  # Material reads the query on keyup
                    nhits = ev("document.querySelectorAll('.md-search-result__item').length")
                    if nhits: break
                    cdp.drain(0.25)
                if not nhits: probs.append('search for "gradcam" found nothing')
            probs = _problems(cdp.events) + probs
            print(f'{page}: {"ok" if not probs else "FAILED"} ({len(png)//1024} KiB screenshot, {nmath} formulas'+(f', {nhits} search hits' if nhits is not None else '')+')')
            errs += [f'{page}: {p}' for p in probs]
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return errs

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--site', default=str(root/'_site'))
    ap.add_argument('--shots', default=str(root/'_site_shots'))
    ap.add_argument('--no-browser', action='store_true')
    a = ap.parse_args()
    site = Path(a.site)
    if not (site/'index.html').exists(): raise SystemExit(f'{site} has no index.html: build it with `mkdocs build --strict -f docs/mkdocs.yml`')
    errs = check_pages(site)
    links = check_links(site)
    print(f'{len(list(site.glob("*.html")))} pages, {len(links)} broken internal links')
    errs += links
    if not a.no_browser: errs += check_browser(site, Path(a.shots))
    if errs: raise SystemExit('site check failed:\n  '+'\n  '.join(errs))
    print('site check passed')

if __name__=='__main__': main()
