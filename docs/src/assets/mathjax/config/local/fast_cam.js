// MathJax 2 as the `jupyter-server-mathjax` package ships it has the STIX-Web fonts only: use them, and no
// locally installed or image fonts, so every reader sees the same maths with no request beyond the site.
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}});
MathJax.Ajax.loadComplete("[MathJax]/config/local/fast_cam.js");
