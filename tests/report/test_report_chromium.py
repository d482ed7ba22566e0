"""report.html in headless Chromium: no console errors, no blocked loads, every image decodes.

A copy of the page gets a small script (the report itself has none) that records script errors,
resource errors, Content-Security-Policy violations and console.error calls, and after the
load event writes them with the image count into the DOM, which ``--dump-dom`` prints.  The
report's own CSP (``default-src 'none'``) stays in force, so a reference to anything outside the
file is blocked and reported instead of fetched.  Skipped when Chromium is not installed
(``apt-get install -y chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and Path("/usr/bin/chromium").exists():
    CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

PROBE = """<script>
window.__netsim = [];
window.addEventListener('error', function (e) {
  window.__netsim.push('error: ' + (e.message || (e.target && e.target.tagName)));
}, true);
document.addEventListener('securitypolicyviolation', function (e) {
  window.__netsim.push('csp: ' + e.violatedDirective + ' ' + e.blockedURI);
});
var __origError = console.error;
console.error = function () { window.__netsim.push('console.error: ' + Array.from(arguments).join(' ')); };
window.addEventListener('load', function () {
  var imgs = document.images, broken = [];
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { broken.push(imgs[i].getAttribute('data-figure')); }
  }
  var out = document.createElement('pre');
  out.id = 'netsim-check';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: window.__netsim});
  document.body.appendChild(out);
});
</script>"""


def _probe(html: str, workdir: Path, name: str) -> tuple[dict[str, Any], list[str]]:
    """Load ``html`` (with the probe) in headless Chromium; return the probe result and console lines."""
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert csp in html
    page = html.replace(csp, csp + "; script-src 'unsafe-inline'").replace("</head>", PROBE + "</head>", 1)
    path = workdir / f"{name}.html"
    path.write_text(page)
    assert CHROMIUM is not None
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={workdir / ('profile-' + name)}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<pre id="netsim-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, "the probe did not run: " + proc.stdout[-500:]
    result = json.loads(
        m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    )
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return result, console


def test_report_loads_cleanly_in_chromium(tmp_path: Path, moe_report: Path) -> None:
    run = moe_report
    html = (run / "report.html").read_text()
    result, console = _probe(html, tmp_path, "report")
    assert result["errors"] == [] and console == []
    assert result["broken"] == []
    assert result["images"] == len(list((run / "figures").glob("*.png"))) > 0

    # the harness itself sees a failing page: a script error and a blocked outside reference
    bad = html.replace("<body>", '<body><img src="file:///nonexistent.png"><script>no_such_fn();</script>', 1)
    result, console = _probe(bad, tmp_path, "bad")
    assert any("no_such_fn" in e for e in result["errors"])
    assert any(e.startswith("csp: img-src") for e in result["errors"])
    assert console
