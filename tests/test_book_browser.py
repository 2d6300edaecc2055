"""Open every page of the built Jupyter Book in headless Chromium and check what a reader sees.

Each page of ``_toc.yml`` is opened once at desktop width (1280x900) and once at phone width
(390x844, mobile); full-page screenshots go to ``_build/screenshots/desktop/<page>.png`` and
``_build/screenshots/phone/<page>.png``. Then, one test per page and check:

- ``test_page_renders``: HTTP 200, an ``<h1>``, no Python traceback or error output, every image
  in the main content loaded (and at least one where the source has a figure), no console errors
  besides the theme's two harmless ones;
- ``test_tables_fit_desktop``: at desktop width no table of the article is wider than the
  article's content column (a table inside a scroll wrapper counts: a reader must not have to
  scroll sideways to read it);
- ``test_no_unresolved_glue``: no literal ``{glue`` (an unresolved MyST glue role) in the page's
  visible text or HTML, and no literal backtick in glued text (it is not parsed as MyST);
- ``test_analysis_chapter_has_figure``: every chapter under the "Results" and "Conclusion" parts
  of ``_toc.yml`` shows at least one loaded image in its main content.

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
from dataclasses import dataclass, field
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
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
# Every table of the article against the article's content box (clientWidth less padding): the
# table's full width (its scrollWidth, or its box when wider) and how far that passes the box,
# in width or at the right edge. A table clipped by a scroll wrapper keeps its full scrollWidth.
MEASURE_TABLES = """() => {
  const col = document.querySelector('article.bd-article') || document.querySelector('main');
  if (!col) return {column: 0, tables: []};
  const style = getComputedStyle(col);
  const left = col.getBoundingClientRect().left + col.clientLeft + parseFloat(style.paddingLeft);
  const width = col.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const tables = Array.from(col.querySelectorAll('table')).map(t => {
    const box = t.getBoundingClientRect();
    const full = Math.max(t.scrollWidth, box.width);
    const row = t.querySelector('thead tr') || t.querySelector('tr');
    const headers = row ? Array.from(row.cells).map(c => c.innerText.trim()).filter(h => h) : [];
    return {width: full, overflow: Math.max(full - width, box.left + full - (left + width)),
            headers: headers.slice(0, 6).map(h => h.slice(0, 40))};
  });
  return {column: width, tables: tables};
}"""

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
ANALYSIS = set(bh.analysis_docnames(ROOT))
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


@dataclass
class Visit:
    """What one page showed: the render problems, plus the measurements the other checks read."""

    status: int | None
    problems: list[str] = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    glue: list[str] = field(default_factory=list)
    loaded_images: int = 0


def _open(browser, book_url: str, page_info: bh.Page, options: dict, screenshot: Path):
    """A new context and page at ``options``, the page loaded with its images and screenshotted:
    (context, page, response, console errors). The caller closes the context."""
    context = browser.new_context(**options)
    # Keep the check offline and deterministic: requests that leave 127.0.0.1 (MathJax, thebe from
    # a CDN) get an empty answer instead of waiting on the network.
    context.route(lambda url: not url.startswith(book_url), lambda route: route.fulfill(status=200, body=""))
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(f"uncaught: {e}"))
    response = page.goto(book_url + page_info.url_path, wait_until="load")
    if response is not None and response.status == 200:
        page.wait_for_load_state("networkidle")
        # lazy images would never load off-screen; make them eager, then wait for all to settle
        page.eval_on_selector_all(CONTENT_IMAGES, "imgs => imgs.forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function(
            f"() => Array.from(document.querySelectorAll({CONTENT_IMAGES!r})).every(i => i.complete)",
            timeout=15_000,
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return context, page, response, console_errors


def _render_problems(page, page_info: bh.Page, images: list[dict], console_errors: list[str]) -> list[str]:
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
    return problems


def _visit(browser, book_url: str, page_info: bh.Page) -> Visit:
    name = _screenshot_name(page_info)
    context, page, response, console_errors = _open(
        browser, book_url, page_info, DESKTOP, SCREENSHOTS / "desktop" / name
    )
    try:
        if response is None or response.status != 200:
            return Visit(status=None if response is None else response.status)
        images = page.eval_on_selector_all(
            CONTENT_IMAGES,
            "imgs => imgs.map(i => ({src: i.getAttribute('src'), w: i.naturalWidth}))",
        )
        visit = Visit(
            status=200,
            problems=_render_problems(page, page_info, images, console_errors),
            tables=page.evaluate(MEASURE_TABLES),
            glue=bh.unresolved_glue(page.inner_text("body"), page.content())
            + bh.code_marks_in_glued_text(page.eval_on_selector_all("span.pasted-text", "els => els.map(e => e.innerText)")),
            loaded_images=sum(1 for img in images if img["w"]),
        )
    finally:
        context.close()
    context, *_ = _open(browser, book_url, page_info, PHONE, SCREENSHOTS / "phone" / name)
    context.close()
    return visit


@pytest.fixture(scope="module")
def visits(book_url, browser):
    """``visits(page_info)``: the page's Visit, each page opened (desktop and phone) only once."""
    cache: dict[str, Visit] = {}

    def get(page_info: bh.Page) -> Visit:
        if page_info.docname not in cache:
            cache[page_info.docname] = _visit(browser, book_url, page_info)
        visit = cache[page_info.docname]
        if visit.status != 200:
            pytest.fail(
                f"{page_info.url_path}: HTTP {visit.status} (page missing from {HTML}; rebuild the book)",
                pytrace=False,
            )
        return visit

    return get


def _fail(page_info: bh.Page, what: str, lines: list[str]) -> None:
    pytest.fail(f"{page_info.url_path}: {what}\n- " + "\n- ".join(lines), pytrace=False)


PARAMS = pytest.mark.parametrize("page_info", PAGES, ids=[p.docname for p in PAGES])


@PARAMS
def test_page_renders(page_info: bh.Page, visits) -> None:
    problems = visits(page_info).problems
    if problems:
        _fail(page_info, "does not render cleanly", problems)


@PARAMS
def test_tables_fit_desktop(page_info: bh.Page, visits) -> None:
    wide = bh.overflowing_tables(visits(page_info).tables)
    if wide:
        _fail(page_info, f"at {DESKTOP['viewport']['width']}px a reader must scroll sideways to read", wide)


@PARAMS
def test_no_unresolved_glue(page_info: bh.Page, visits) -> None:
    glue = visits(page_info).glue
    if glue:
        _fail(page_info, "literal '{glue' (an unresolved MyST glue role) or a backtick in glued text", glue)


def test_toc_names_analysis_chapters() -> None:
    assert ANALYSIS, f"{ROOT / '_toc.yml'} has no part captioned {' or '.join(bh.ANALYSIS_CAPTIONS)}"


ANALYSIS_PAGES = [p for p in PAGES if p.docname in ANALYSIS]


@pytest.mark.parametrize("page_info", ANALYSIS_PAGES, ids=[p.docname for p in ANALYSIS_PAGES])
def test_analysis_chapter_has_figure(page_info: bh.Page, visits) -> None:
    if not visits(page_info).loaded_images:
        _fail(page_info, "an analysis chapter without a figure", ["no loaded <img> in its main content"])


SYNTHETIC_TABLES = """<!doctype html><html><body style="margin:0">
<main><article class="bd-article" style="width:600px; padding: 0 20px; box-sizing: content-box">
<table><thead><tr><th>narrow</th><th>ok</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table>
<div style="overflow-x:auto"><table style="width:900px"><thead><tr><th>wrapped</th><th>wide</th></tr></thead>
<tbody><tr><td>1</td><td>2</td></tr></tbody></table></div>
<table><thead><tr><th>bare</th></tr></thead>
<tbody><tr><td style="white-space:nowrap">{cells}</td></tr></tbody></table>
<div style="margin-left:100px"><table style="width:550px"><tr><th>shifted</th></tr></table></div>
</article></main></body></html>"""


def test_table_measure_catches_wide_tables(browser) -> None:
    """The measurement on a synthetic page: a 600px column, a table that fits, a 900px table in a
    scroll wrapper, a table pushed wide by unbreakable text and a fitting-width table shifted right."""
    context = browser.new_context(**DESKTOP)
    try:
        page = context.new_page()
        page.set_content(SYNTHETIC_TABLES.format(cells="wide-cell " * 120))
        measure = page.evaluate(MEASURE_TABLES)
    finally:
        context.close()
    assert measure["column"] == pytest.approx(600, abs=1)
    wide = bh.overflowing_tables(measure)
    assert [line.split("]")[0] for line in wide] == [
        "table 2 [wrapped | wide", "table 3 [bare", "table 4 [shifted"
    ], wide


LANDING = next((p for p in PAGES if p.docname == "book/intro"), None)
BOOKKEEPING_HEADERS = {"training hours", "runs", "seeds"}  # the run inventory lives in the appendix (book/progress)
VERDICT_BOX_WORDS = 60  # the landing page's verdict box is read at a glance


@pytest.mark.skipif(LANDING is None, reason="no book/intro in the toc")
def test_landing_page_reads_at_a_glance(book_url, browser) -> None:
    context, page, response, _ = _open(browser, book_url, LANDING, DESKTOP, SCREENSHOTS / "desktop" / "intro-glance.png")
    try:
        if response is None or response.status != 200:
            pytest.fail(f"{LANDING.url_path}: not served (rebuild the book)", pytrace=False)
        boxes = page.locator("main .admonition.important")
        assert boxes.count() >= 1, "the landing page has no verdict box"
        title = boxes.first.locator(".admonition-title").inner_text()
        words = len(boxes.first.inner_text().split()) - len(title.split())
        headers = page.eval_on_selector_all("main table th", "els => els.map(e => e.innerText.trim().toLowerCase())")
    finally:
        context.close()
    assert words < VERDICT_BOX_WORDS, f"the verdict box has {words} words; at a glance means under {VERDICT_BOX_WORDS}"
    found = BOOKKEEPING_HEADERS & set(headers)
    assert not found, f"bookkeeping columns {sorted(found)} on the landing page: they belong in book/progress"
