"""The demo in a real browser: Debian's chromium driven by Playwright, with every non-loopback request blocked."""

from __future__ import annotations

from pathlib import Path

import PIL.Image
import pytest

from hvae_pipeline.demo.browser import find_chromium, generate_in_page, offline_page, scrolls_inside

pytestmark = pytest.mark.browser


def test_generate_renders_the_gallery_offline(demo_url: str, tmp_path: Path) -> None:
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium executable on PATH (chromium, chromium-browser or /usr/bin/chromium): "
                    "run `bash scripts/install_browser.sh`")
    screenshot = tmp_path / "demo.png"
    with offline_page(executable) as (page, blocked):
        widths = generate_in_page(page, demo_url, num_samples=4)
        captions = page.locator("#sample-gallery").inner_text()
        gallery_scrolls = scrolls_inside(page, "#sample-gallery")
        page.screenshot(path=str(screenshot), full_page=True)

    # Every picture (image, mask and overlay of 4 samples) arrived and decoded at the model's 16 pixels.
    assert widths == [16] * 12
    assert "tumour area" in captions
    assert not gallery_scrolls  # every sample shows whole; the page scrolls, not the gallery
    # The page worked with the outside world cut off, and did not even try to reach it (no CDN, no analytics).
    assert blocked == []
    with PIL.Image.open(screenshot) as picture:
        assert picture.format == "PNG" and picture.width == 1280
