"""Screenshot an HTML report to a full-page PNG with headless Chromium.

    render_to_png("report.html", "report.png")
    python -m glmil_auto.evaluation.report.render_report report.html report.png [--width 1400] [--height H]

Chromium's ``--screenshot`` captures the window, not the page, so the window is made tall (the
given ``height``, else an estimate from the HTML, at least :data:`DEFAULT_HEIGHT`); the blank
band below the page's end is cropped away. When the page reaches the window's bottom edge the
screenshot is taken again with a taller window (up to :data:`MAX_HEIGHT`). Needs the Debian
package ``chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["render_to_png", "find_chromium", "estimate_height", "main"]

#: Height of the window when none is given and the estimate is smaller.
DEFAULT_HEIGHT = 4000
#: Tallest window tried when the page does not fit.
MAX_HEIGHT = 60000
#: Blank rows kept below the page's content.
_MARGIN = 24
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    """Path of a Chromium (or Chrome) executable; RuntimeError naming the package otherwise."""
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    raise RuntimeError(
        "headless Chromium is needed to render the report to PNG but was not found on PATH; "
        "install the Debian package 'chromium' (apt-get install chromium)"
    )


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when it is not a PNG."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def estimate_height(html: str, width: int) -> int:
    """A generous guess of the page height in pixels: embedded images (scaled to the content
    width) plus a line height per table row, heading, paragraph and preformatted line."""
    content_width = min(width, 1320) - 72
    height = 400
    for encoded in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        size = _png_size(base64.b64decode(encoded[:32])) if len(encoded) >= 32 else None
        if size:
            image_width, image_height = size
            scale = min(1.0, content_width / image_width) if image_width else 1.0
            height += int(image_height * scale) + 60
    text = re.sub(r'src="data:[^"]*"', "", html)
    height += 40 * len(re.findall(r"<tr[ >]", text))
    height += 60 * len(re.findall(r"<h[1-4][ >]", text))
    height += 40 * len(re.findall(r"<(?:p|li|figcaption)[ >]", text))
    height += 24 * text.count("\n")
    return int(height * 1.3)


def _screenshot(chromium: str, html_path: Path, png_path: Path, width: int, height: int) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="glmil_chromium_") as profile:
        command = [
            chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            f"--user-data-dir={profile}", f"--window-size={width},{height}",
            f"--screenshot={png_path}", html_path.as_uri(),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"chromium did not finish the screenshot within {error.timeout} s") from error
    if result.returncode != 0 or not png_path.exists():
        raise RuntimeError(f"chromium failed (exit code {result.returncode}): {result.stderr.strip()[-2000:]}")
    with Image.open(png_path) as image:
        return np.asarray(image.convert("RGB"))


def _content_rows(image: np.ndarray) -> int:
    """Number of rows down to the last one that differs from the bottom row (the background)."""
    pixels = image[..., :3] if image.ndim == 3 else image
    background = pixels[-1]
    differs = (pixels != background[None]).reshape(pixels.shape[0], -1).any(axis=1)
    rows = np.flatnonzero(differs)
    return int(rows[-1]) + 1 if rows.size else 0


def render_to_png(html_path: str | Path, png_path: str | Path, width: int = 1400,
                  height: int | None = None) -> Path:
    """Screenshot ``html_path`` with headless Chromium at ``width`` pixels to ``png_path``.

    With ``height`` None the window is as tall as the estimate of the page (at least
    :data:`DEFAULT_HEIGHT`) and is doubled while the page's content reaches its bottom edge;
    the blank band below the content is cropped. A given ``height`` is used as it is (no crop).
    Raises RuntimeError when Chromium is missing or fails, FileNotFoundError without the HTML.
    """
    html_path, png_path = Path(html_path).resolve(), Path(png_path)
    if not html_path.is_file():
        raise FileNotFoundError(f"no HTML file at {html_path}")
    chromium = find_chromium()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    if height is not None:
        _screenshot(chromium, html_path, png_path.resolve(), int(width), int(height))
        return png_path

    window = max(DEFAULT_HEIGHT, estimate_height(html_path.read_text(encoding="utf-8", errors="replace"), width))
    window = min(window, MAX_HEIGHT)
    while True:
        image = _screenshot(chromium, html_path, png_path.resolve(), int(width), window)
        rows = _content_rows(image)
        if rows + _MARGIN < image.shape[0] or window >= MAX_HEIGHT:
            break
        window = min(window * 2, MAX_HEIGHT)
    keep = min(image.shape[0], max(rows + _MARGIN, 1))
    if keep < image.shape[0]:
        cropped = np.ascontiguousarray(image[:keep])
        buffer = io.BytesIO()
        Image.fromarray(cropped).save(buffer, format="PNG", optimize=True)
        png_path.write_bytes(buffer.getvalue())
    return png_path


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m glmil_auto.evaluation.report.render_report report.html report.png``."""
    parser = argparse.ArgumentParser(description="Render an HTML report to a full-page PNG with headless Chromium.")
    parser.add_argument("html", type=Path, help="the HTML file")
    parser.add_argument("png", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1400, help="window width in pixels (default 1400)")
    parser.add_argument("--height", type=int, default=None,
                        help="window height in pixels (default: the full page, estimated and cropped)")
    args = parser.parse_args(argv)
    try:
        path = render_to_png(args.html, args.png, width=args.width, height=args.height)
    except (RuntimeError, FileNotFoundError) as error:
        print(f"render_report: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
