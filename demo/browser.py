"""Drive the demo in a real browser (Debian's chromium through Playwright) and save a screenshot of it.

Used by the browser test and to refresh the README's screenshot::

    python -m hvae_pipeline.demo.browser --out docs/demo-screenshot.png [--model PATH_OR_REPO]

Chromium is started from the system (``scripts/install_browser.sh``), never downloaded, and every request to a host
other than this machine is blocked and recorded, so a page that works here works offline.
"""

from __future__ import annotations

import argparse
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence
from urllib.parse import urlsplit

if TYPE_CHECKING:  # Playwright is a development dependency: imported only when a browser is driven.
    from playwright.sync_api import Page, Route

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")
# Flags that keep chromium from contacting Google's services on its own and let it run as root in containers.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
VIEWPORT = {"width": 1280, "height": 900}


def find_chromium() -> str | None:
    """Path of the system's chromium executable, or ``None`` when none is installed."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@contextmanager
def offline_page(executable: str) -> Iterator[tuple["Page", list[str]]]:
    """Open a headless chromium page that may only reach this machine.

    Args:
        executable: The chromium executable (see :func:`find_chromium`).

    Yields:
        ``(page, blocked)``: the page, and the list the URLs of blocked (non-loopback) requests are appended to.
    """
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def only_loopback(route: "Route") -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.route("**/*", only_loopback)
            yield context.new_page(), blocked
        finally:
            browser.close()


def generate_in_page(page: "Page", url: str, num_samples: int, timeout_s: float = 60.0) -> list[int]:
    """Open the demo, ask for ``num_samples`` samples, click Generate and wait for the gallery's images to load.

    Args:
        page: A page from :func:`offline_page`.
        url: The demo's address.
        num_samples: Value typed into the "Number of samples" box.
        timeout_s: How long to wait for the page and for the gallery.

    Returns:
        The ``naturalWidth`` of every image of the sample gallery (three per sample: image, mask, overlay; 0 for an
        image that failed to decode).
    """
    timeout_ms = timeout_s * 1000
    page.goto(url, wait_until="load", timeout=timeout_ms)
    number_box = page.get_by_label("Number of samples", exact=False).first
    number_box.fill(str(num_samples))
    number_box.press("Enter")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(
        """count => {
            const images = document.querySelectorAll('#sample-gallery img');
            return images.length >= count && [...images].every(image => image.complete);
        }""",
        arg=3 * num_samples,
        timeout=timeout_ms,
    )
    return page.eval_on_selector_all("#sample-gallery img", "images => images.map(image => image.naturalWidth)")


def scrolls_inside(page: "Page", selector: str) -> bool:
    """Whether any element within ``selector`` has a scroll bar of its own (content taller than its box)."""
    return page.eval_on_selector_all(f"{selector} *", """elements => elements.some(element => {
        const overflow = getComputedStyle(element).overflowY;
        return (overflow === 'auto' || overflow === 'scroll') && element.scrollHeight > element.clientHeight + 1;
    })""")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the demo on 127.0.0.1, generate samples in chromium and save a screenshot of the page."""
    parser = argparse.ArgumentParser(prog="python -m hvae_pipeline.demo.browser", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/demo-screenshot.png"), help="screenshot file (PNG)")
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--num-samples", type=int, default=8, help="samples to generate before the screenshot")
    args = parser.parse_args(argv)
    executable = find_chromium()
    if executable is None:
        parser.exit(1, "no chromium executable found: run `bash scripts/install_browser.sh`\n")

    from hvae_pipeline.bundled_model import load_pipeline

    from .app import build_demo, launch

    pipeline, description = load_pipeline(args.model)
    demo = build_demo(pipeline, description)
    launch(demo, prevent_thread_lock=True)
    try:
        with offline_page(executable) as (page, blocked):
            widths = generate_in_page(page, demo.local_url, args.num_samples, timeout_s=300)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
    finally:
        demo.close()
    print(f"Saved {args.out}: {len(widths)} gallery images; blocked outgoing requests: {blocked or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
