"""Check a report page as a person sees it: open it in headless Chromium, take a full-page screenshot, and verify
from inside the browser that every image decoded and is drawn large enough to read (issue 25).

Not part of CI (it needs a browser): ``apt-get install chromium`` (Debian), then::

    python docs/report_check.py semmae_demo/report.html --out bench_out/report-check

writes ``report.png`` (the whole page at ``--width`` px) and ``report-check.json`` and prints one line per image
(its alt text, natural and drawn size). Exit 1 if an image did not load, or one is drawn narrower than
``--min-figure-width`` px, or the page is wider than the window (a table that forces horizontal scrolling). Look at
the screenshot yourself: this checks that the page renders, not that it reads well.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# runs in the page after load: what the browser really decoded and drew, written into the title for --dump-dom
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = {
    images: imgs.map(i => ({alt: i.alt || i.src.slice(0, 60), ok: i.complete && i.naturalWidth > 0,
                             natural: [i.naturalWidth, i.naturalHeight], drawn: [i.width, i.height]})),
    tables: document.querySelectorAll('table').length,
    page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
  };
  document.title = 'REPORT-CHECK ' + JSON.stringify(out);
});
</script>"""


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("report_check: no Chromium found; install it with `apt-get install chromium`")


def headless(*args: str, timeout: int = 120) -> str:
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise SystemExit(f"report_check: chromium failed ({res.returncode}): {res.stderr.strip()[-300:]}")
    return res.stdout


def probe_page(page: Path, width: int) -> dict:
    """Load a copy of ``page`` with :data:`PROBE` appended and read the probe's result back from the DOM."""
    text = page.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / page.name
        # relative image paths must still resolve: keep the copy beside the original's files via <base>
        base = f'<base href="{page.parent.resolve().as_uri()}/">'
        copy.write_text(re.sub(r"(<head[^>]*>)", r"\1" + base, text, count=1) + PROBE)
        dom = headless(
            f"--window-size={width},1000", "--virtual-time-budget=8000", "--dump-dom", copy.as_uri()
        )
    found = re.search(r"<title>REPORT-CHECK (.*?)</title>", dom, re.S)
    if not found:
        raise SystemExit("report_check: the page never finished loading (no probe result in the DOM)")
    return json.loads(html.unescape(found.group(1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", help="report.html")
    ap.add_argument(
        "--out", default="bench_out/report-check", help="folder for report.png and report-check.json"
    )
    ap.add_argument("--width", type=int, default=1280, help="window width in CSS px")
    ap.add_argument("--min-figure-width", type=int, default=480, help="smallest acceptable drawn image width")
    ap.add_argument("--max-height", type=int, default=16000, help="screenshot height cap (px)")
    args = ap.parse_args(argv)
    page = Path(args.page).resolve()
    if not page.is_file():
        raise SystemExit(f"report_check: {page} does not exist")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = probe_page(page, args.width)
    height = min(result["page"][1] + 40, args.max_height)
    shot = out / "report.png"
    headless(f"--window-size={args.width},{height}", f"--screenshot={shot.resolve()}", page.as_uri())
    problems = []
    for img in result["images"]:
        print(
            f"{'ok ' if img['ok'] else 'BROKEN'} {img['alt'][:70]:70s} natural {img['natural']} drawn {img['drawn']}"
        )
        if not img["ok"]:
            problems.append(f"image {img['alt']!r} did not load")
        elif img["drawn"][0] < args.min_figure_width:
            problems.append(
                f"image {img['alt']!r} is drawn {img['drawn'][0]} px wide (< {args.min_figure_width})"
            )
    if result["page"][0] > args.width:
        problems.append(
            f"the page is {result['page'][0]} px wide in a {args.width} px window (horizontal scroll)"
        )
    result |= {"screenshot": str(shot), "problems": problems}
    (out / "report-check.json").write_text(json.dumps(result, indent=1))
    print(
        f"{len(result['images'])} images, {result['tables']} tables, page {result['page']}; screenshot {shot}"
    )
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
