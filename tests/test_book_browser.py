"""Open every page of the built Jupyter Book in headless Chromium and check what a reader sees.

For each page of ``_toc.yml`` (one test per page): HTTP 200, an ``<h1>``, no Python traceback or
error output, every image in the main content loaded (and at least one where the source has a
figure), no console errors besides the theme's two harmless ones. A full-page screenshot of each
page goes to ``_build/screenshots/``.

Needs Debian's Chromium at /usr/bin/chromium (CI: ``apt-get install -y chromium``) and the
``playwright`` Python package; never ``playwright install``. The book is served from
``_build/html`` (built first with jupyter-book if ``index.html`` is missing); set
``CRISP_BOOK_HTML`` to check another built folder (its ``../../_toc.yml``, or ``CRISP_BOOK_ROOT``,
gives the pages) and ``CRISP_BOOK_REBUILD=1`` to force a build.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_helpers as bh  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# sphinx-book-theme logs these on every page; they do not affect the reader. Chromium words the
# first as an uncaught "Identifier 'THEBE_JS_URL' has already been declared".
HARMLESS_CONSOLE = re.compile(r"THEBE_JS_URL'? has already been declared|invalid theme mode", re.I)
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
CONTENT_IMAGES = "main img, article img"

if not CHROMIUM.exists() and os.environ.get("CRISP_REQUIRE_BROWSER") == "1":  # CI sets it: never skip silently
    raise RuntimeError(f"{CHROMIUM} not found but CRISP_REQUIRE_BROWSER=1: apt-get install -y chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium (CI does: apt-get install -y chromium); "
        "never `playwright install`",
        allow_module_level=True,
    )
pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
from playwright.sync_api import sync_playwright  # noqa: E402

ROOT = bh.book_root()
if not (ROOT / "_toc.yml").is_file():
    pytest.skip(f"no _toc.yml in {ROOT}: the book does not exist yet", allow_module_level=True)
HTML = bh.html_dir(ROOT)
PAGES = bh.toc_pages(ROOT, HTML)
SCREENSHOTS = HTML.parent / "screenshots"


def _screenshot_name(page: bh.Page) -> str:
    stem = Path(page.docname).name
    if sum(Path(p.docname).name == stem for p in PAGES) > 1:
        stem = page.docname.replace("/", "__")
    return stem + ".png"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="module")
def book_url():
    """Serve the built book on 127.0.0.1 (random free port), building it first if needed."""
    index = HTML / "index.html"
    if os.environ.get("CRISP_BOOK_HTML"):
        if not index.is_file():
            pytest.fail(f"CRISP_BOOK_HTML={HTML} has no index.html")
    elif os.environ.get("CRISP_BOOK_REBUILD") == "1" or not index.is_file():
        ok, log = bh.build_book(ROOT)
        if not ok or not index.is_file():
            pytest.fail(f"building the book failed:\n{log}", pytrace=False)

    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.parametrize("page_info", PAGES, ids=[p.docname for p in PAGES])
def test_page_renders(page_info: bh.Page, book_url: str, browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # Keep the check offline and deterministic: requests that leave 127.0.0.1 (MathJax, thebe from
    # a CDN) get an empty answer instead of waiting on the network.
    external: list[str] = []

    def stub(route):
        external.append(route.request.url)
        route.fulfill(status=200, body="")

    context.route(lambda url: not url.startswith(book_url), stub)
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(f"uncaught: {e}"))
    try:
        response = page.goto(book_url + page_info.url_path, wait_until="load")
        assert response is not None, f"no response for {page_info.url_path}"
        assert response.status == 200, (
            f"{page_info.url_path}: HTTP {response.status} (page missing from {HTML}; rebuild the book)"
        )
        page.wait_for_load_state("networkidle")
        # lazy images would never load off-screen; make them eager, then wait for all to settle
        page.eval_on_selector_all(CONTENT_IMAGES, "imgs => imgs.forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function(
            f"() => Array.from(document.querySelectorAll({CONTENT_IMAGES!r})).every(i => i.complete)",
            timeout=15_000,
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / _screenshot_name(page_info)), full_page=True)

        problems: list[str] = []
        if page.locator("h1").count() == 0:
            problems.append("no <h1> on the page")

        body_text = page.inner_text("body")
        match = TRACEBACK.search(body_text)
        if match:
            start = body_text.rfind("\n", 0, match.start()) + 1
            problems.append("Python traceback on the page:\n" + body_text[start : match.end() + 500])
        error_cells = page.eval_on_selector_all(
            ".output.traceback, .output.error, .output.stderr",
            "els => els.map(e => ({cls: e.className, text: e.innerText}))",
        )
        for cell in error_cells:
            if "stderr" not in cell["cls"].split() or "Error" in cell["text"]:
                problems.append(f"error output ({cell['cls']}):\n{cell['text'][:800]}")

        images = page.eval_on_selector_all(
            CONTENT_IMAGES,
            "imgs => imgs.map(i => ({src: i.getAttribute('src'), w: i.naturalWidth}))",
        )
        broken = [img["src"] for img in images if not img["w"]]
        if broken:
            problems.append(f"{len(broken)} image(s) did not load: {broken}")
        if bh.expects_figure(page_info, HTML) and not images:
            problems.append(
                f"the source {page_info.source} has a figure, but the page shows no image in its main content"
            )

        bad_console = [m for m in console_errors if not HARMLESS_CONSOLE.search(m)]
        if bad_console:
            problems.append("console errors:\n  " + "\n  ".join(bad_console))

        if problems:
            pytest.fail(f"{page_info.url_path}:\n- " + "\n- ".join(problems), pytrace=False)
    finally:
        context.close()
