"""Open a `dpominer report` page in headless Chromium: does it render, with every image decoded and no
console errors? Writes a full-page screenshot beside the page.

    python bench/render_report.py report.html [--chromium /usr/bin/chromium]

Needs Chromium (Debian: `apt-get install chromium`). The page is checked by a small script injected
at load: it counts images whose PNG failed to decode (naturalWidth 0) and reports them in the title,
which `--dump-dom` prints.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
PROBE = ("<script>addEventListener('load',()=>{const bad=[...document.images].filter(i=>!i.naturalWidth).length;"
         "document.title='IMAGES '+document.images.length+' BROKEN '+bad;});</script>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "page.html"
        probed.write_text(args.page.read_text().replace("</body>", PROBE + "</body>"))
        base = [args.chromium, *FLAGS, f"--user-data-dir={tmp}/profile"]
        dom = subprocess.run([*base, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
        shot = args.page.with_suffix(".screenshot.png")
        subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,5200", probed.as_uri()],
                       capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", dom.stdout)
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "ERROR" in line)]
    print(f"title after load: {title.group(1) if title else None}")
    print(f"console errors: {len(errors)}")
    for line in errors[:10]:
        print("  " + line)
    print(f"screenshot: {shot} ({shot.stat().st_size if shot.exists() else 0} bytes)")
    counts = re.match(r"IMAGES (\d+) BROKEN (\d+)", title.group(1)) if title else None
    ok = counts is not None and int(counts.group(1)) > 0 and counts.group(2) == "0" and not errors
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
