"""Helpers for the browser test of the Jupyter Book (``tests/test_book_browser.py``).

Pure functions (no browser): locate the book, list its pages from ``_toc.yml`` (and its analysis
chapters), decide which pages must show at least one figure, and build the book with jupyter-book 1.x.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

# Suffixes a `file:` entry of _toc.yml may point at (jupytext .py/.md notebooks included).
SOURCE_SUFFIXES = (".ipynb", ".md", ".myst", ".rst", ".py")
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif", "image/webp")
# Cell tags with which Jupyter Book drops a cell's output from the page.
REMOVING_TAGS = {"remove-output", "remove_output", "remove-cell", "remove_cell"}

# MyST that always puts an image on the page: {glue:figure}, {figure}, {image}, ![alt](src).
FIGURE_MARKUP = re.compile(
    r"\{glue:figure\}|```+\s*\{figure\}|:::+\s*\{figure\}|```+\s*\{image\}|:::+\s*\{image\}"
    r"|!\[[^\]]*\]\([^)]+\)"
)
# Code that leaves a matplotlib/seaborn figure open at the end of a cell: the inline backend shows it.
FIGURE_CODE = re.compile(
    r"plt\.(subplots|figure|plot|imshow|bar|hist|scatter)\(|sns\.(\w*plot|heatmap|clustermap)\(|\.plot\(|\.imshow\("
)
CLOSES_FIGURE = re.compile(r"plt\.close\(|\.savefig\(")
# {glue} / {glue:any} role or directive: shows an image only when the glued value is one.
GLUE_ANY = re.compile(r"\{glue(?::any)?\}`([^`]+)`|```+\s*\{glue(?::any)?\}\s+(\S+)")


@dataclass(frozen=True)
class Page:
    docname: str  # the _toc.yml `file:` entry without suffix, e.g. "book/03_entropy"
    source: Path | None  # the source file, when found
    html: Path  # where the built page must be

    @property
    def url_path(self) -> str:
        return self.docname + ".html"


def book_root() -> Path:
    """The folder holding _config.yml/_toc.yml.

    CRISP_BOOK_ROOT wins; else, when CRISP_BOOK_HTML points at ``X/_build/html`` and ``X`` has a
    ``_toc.yml``, that ``X``; else the repository root.
    """
    if os.environ.get("CRISP_BOOK_ROOT"):
        return Path(os.environ["CRISP_BOOK_ROOT"]).resolve()
    if os.environ.get("CRISP_BOOK_HTML"):
        guess = Path(os.environ["CRISP_BOOK_HTML"]).resolve().parent.parent
        if (guess / "_toc.yml").is_file():
            return guess
    return REPO_ROOT


def html_dir(root: Path) -> Path:
    """The built HTML folder: CRISP_BOOK_HTML, else ``<root>/_build/html``."""
    if os.environ.get("CRISP_BOOK_HTML"):
        return Path(os.environ["CRISP_BOOK_HTML"]).resolve()
    return root / "_build" / "html"


def _strip_suffix(entry: str) -> str:
    for suffix in (".myst.md",) + SOURCE_SUFFIXES:
        if entry.endswith(suffix):
            return entry[: -len(suffix)]
    return entry


def _find_source(root: Path, docname: str) -> Path | None:
    for suffix in (".ipynb", ".md", ".myst.md", ".myst", ".rst", ".py"):
        candidate = root / (docname + suffix)
        if candidate.is_file():
            return candidate
    return None


# Parts of _toc.yml whose chapters are analysis chapters (each must show a figure).
ANALYSIS_CAPTIONS = ("Results", "Conclusion")


def _load_toc(root: Path) -> dict:
    return yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")) or {}


def _walk_toc(root: Path, node, names: list[str]) -> None:
    """Append to ``names`` every page under ``node`` (a _toc.yml list or entry), in order."""

    def add(name: str) -> None:
        name = _strip_suffix(str(name).strip().lstrip("./"))
        if name not in names:
            names.append(name)

    if isinstance(node, list):
        for item in node:
            _walk_toc(root, item, names)
    elif isinstance(node, dict):
        if "file" in node:
            add(node["file"])
        if "glob" in node:
            for path in sorted(root.glob(str(node["glob"]))):
                if path.suffix in SOURCE_SUFFIXES and "_build" not in path.parts:
                    add(path.relative_to(root).as_posix())
        for key in ("parts", "chapters", "sections", "subtrees", "entries"):
            if key in node:
                _walk_toc(root, node[key], names)


def toc_docnames(root: Path) -> list[str]:
    """Every page of _toc.yml in order: root, then parts → chapters → sections (and globs)."""
    toc = _load_toc(root)
    names: list[str] = []
    if toc.get("root"):
        _walk_toc(root, {"file": toc["root"]}, names)
    _walk_toc(root, toc, names)
    return names


def analysis_docnames(root: Path, captions=ANALYSIS_CAPTIONS) -> list[str]:
    """Pages under the parts of _toc.yml captioned one of ``captions`` (case-insensitive)."""
    wanted = {c.casefold() for c in captions}
    names: list[str] = []
    for part in _load_toc(root).get("parts") or []:
        if isinstance(part, dict) and str(part.get("caption", "")).strip().casefold() in wanted:
            _walk_toc(root, part, names)
    return names


def toc_pages(root: Path, html: Path) -> list[Page]:
    return [Page(d, _find_source(root, d), html / (d + ".html")) for d in toc_docnames(root)]


def _notebook_evidence(nb: dict) -> tuple[bool, str]:
    """(has an image output that the page shows, or code that draws one; the markdown cells' text).

    The code check matters for notebooks committed without outputs when the executed copy is
    missing, and catches a figure lost at execution (e.g. a non-inline matplotlib backend)."""
    has_image = False
    markdown = []
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if cell.get("cell_type") == "markdown":
            markdown.append(source)
            continue
        if cell.get("cell_type") != "code":
            continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & REMOVING_TAGS:
            continue
        if FIGURE_CODE.search(source) and not CLOSES_FIGURE.search(source):
            has_image = True
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            # myst-nb < 1 kept glued values as hidden outputs; they only show via a glue reference
            if "scrapbook" in output.get("metadata", {}):
                continue
            if any(mime in data for mime in IMAGE_MIMES):
                has_image = True
    return has_image, "\n".join(markdown)


def _glued_images(glue_json: Path) -> set[str]:
    """Keys of glued values that carry an image (myst-nb 1.x writes them to <page>.glue.json)."""
    if not glue_json.is_file():
        return set()
    try:
        data = json.loads(glue_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    keys = set()
    for key, value in data.items():
        mimes = value.get("data", {}) if isinstance(value, dict) else {}
        if any(mime in mimes for mime in IMAGE_MIMES):
            keys.add(key)
    return keys


def expects_figure(page: Page, html: Path) -> bool:
    """Whether the page must show at least one image.

    True when the source (or the executed copy jupyter-book keeps in ``_build/jupyter_execute``)
    has an image output in a cell whose output is not removed, or the page's MyST text uses
    ``{glue:figure}``, ``{figure}``, ``{image}``, ``![..](..)``, or ``{glue}`` of a glued image.
    """
    executed = html.parent / "jupyter_execute" / (page.docname + ".ipynb")
    glue_json = html.parent / "jupyter_execute" / (page.docname + ".glue.json")
    texts = []
    for path in (page.source, executed):
        if path is None or not path.is_file():
            continue
        if path.suffix == ".ipynb":
            try:
                nb = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            has_image, text = _notebook_evidence(nb)
            if has_image:
                return True
            texts.append(text)
        else:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    text = "\n".join(texts)
    if FIGURE_MARKUP.search(text):
        return True
    glued = _glued_images(glue_json)
    referenced = {(a or b).split("::")[-1].split(":")[0] for a, b in GLUE_ANY.findall(text)}
    return bool(glued & referenced)


def build_command(root: Path) -> list[str]:
    """jupyter-book 1.x has no ``python -m jupyter_book``: call its click entry point with this
    interpreter (same as the ``jupyter-book`` console script). -W with --keep-going fails the build
    on any warning (a failing notebook is only a warning otherwise) and reports all of them."""
    return [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(root),
        "-W",
        "-n",
        "--keep-going",
    ]


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LOG_SIGNALS = re.compile(r": (WARNING|ERROR|CRITICAL):|CellExecutionError|Exception occurred|Error: ")


def build_book(root: Path, tail_lines: int = 8) -> tuple[bool, str]:
    """Build the book; (ok, summary). The full log goes to ``<root>/_build/book-build.log``; the
    summary has the Sphinx warnings/errors, the failing cell (if any) and the log's last lines."""
    command = build_command(root)
    proc = subprocess.run(
        command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    log = ANSI.sub("", proc.stdout)
    log_path = root / "_build" / "book-build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(log, encoding="utf-8")
    lines = log.splitlines()
    picked: list[str] = []
    for i, line in enumerate(lines):
        if "CellExecutionError" in line and not any("CellExecutionError" in p for p in picked):
            picked.extend(lines[i : i + 20])
        elif _LOG_SIGNALS.search(line) and "Kernel is running over TCP" not in line:
            picked.append(line)
    summary = "\n".join(
        [f"$ {shlex.join(command)}", f"(exit {proc.returncode}; full log: {log_path})", *picked[:120],
         "... last lines:", *lines[-tail_lines:]]
    )
    return proc.returncode == 0, summary


# An unresolved MyST glue role or directive shows up literally, e.g. "{glue:text}`cost::x:.2f`".
UNRESOLVED_GLUE = re.compile(r"\{glue")


def unresolved_glue(text: str, html: str, context: int = 50, limit: int = 5) -> list[str]:
    """Snippets around each literal ``{glue`` of the page's visible text, or, when the text has
    none, of its HTML (a role that renders into an attribute or hidden element)."""
    for where, source in (("visible text", text), ("HTML", html)):
        hits = [m.start() for m in UNRESOLVED_GLUE.finditer(source)]
        if hits:
            snippets = [
                " ".join(source[max(0, i - context) : i + context].split()) for i in hits[:limit]
            ]
            more = f" (+{len(hits) - limit} more)" if len(hits) > limit else ""
            return [f"{len(hits)} in the {where}{more}:", *(f"  ...{s}..." for s in snippets)]
    return []


def code_marks_in_glued_text(pasted: list[str], limit: int = 5) -> list[str]:
    """Glued text (myst-nb's ``span.pasted-text``) that shows a literal backtick: glued text is not parsed
    as MyST, so code marks written into it reach the reader as they are."""
    bad = [" ".join(t.split())[:80] for t in pasted if "`" in t]
    return [f"{len(bad)} glued text(s) with a literal backtick:", *(f"  {t}" for t in bad[:limit])] if bad else []


def overflowing_tables(measure: dict, tolerance_px: float = 1.0) -> list[str]:
    """One line per table wider than the content column, from the browser measurement
    ``{"column": width_px, "tables": [{"width", "overflow", "headers"}, ...]}``."""
    lines = []
    for number, table in enumerate(measure.get("tables", []), start=1):
        if table["overflow"] > tolerance_px:
            headers = " | ".join(table["headers"]) or "(no header cells)"
            lines.append(
                f"table {number} [{headers}] is {table['width']:.0f}px wide, "
                f"{table['overflow']:.0f}px past the {measure['column']:.0f}px content column"
            )
    return lines
