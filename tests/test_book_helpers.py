"""The pure helpers of the browser test (``tests/book_helpers.py``): no browser, no book build."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_helpers as bh  # noqa: E402

TOC = """format: jb-book
root: book/intro
parts:
  - caption: Method
    chapters:
      - file: book/methods
  - caption: Results
    chapters:
      - file: book/main_result.ipynb
        sections:
          - file: book/detail
      - file: book/cost
  - caption: " conclusion "
    chapters:
      - file: book/verdict
  - caption: Appendix
    chapters:
      - file: book/library
"""


def test_analysis_docnames_are_the_results_and_conclusion_parts(tmp_path):
    (tmp_path / "_toc.yml").write_text(TOC, encoding="utf-8")
    assert bh.analysis_docnames(tmp_path) == ["book/main_result", "book/detail", "book/cost", "book/verdict"]
    assert bh.toc_docnames(tmp_path) == [
        "book/intro", "book/methods", "book/main_result", "book/detail", "book/cost", "book/verdict",
        "book/library",
    ]


def test_analysis_docnames_empty_without_those_captions(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: a\n", encoding="utf-8")
    assert bh.analysis_docnames(tmp_path) == []


def test_unresolved_glue_prefers_visible_text():
    text = "Cost is {glue:text}`cost::ratio:.2f` times dense."
    found = bh.unresolved_glue(text, "<p>" + text + "</p>")
    assert found[0] == "1 in the visible text:" and "{glue:text}`cost::ratio" in found[1]
    assert bh.unresolved_glue("all resolved: 1.93", '<span title="{glue:x}">1.93</span>')[0] == "1 in the HTML:"
    assert bh.unresolved_glue("1.93 and glue", "<p>1.93 and glue()</p>") == []


def test_overflowing_tables_names_the_headers():
    measure = {"column": 700.0, "tables": [
        {"width": 650.0, "overflow": -50.0, "headers": ["a", "b"]},
        {"width": 1400.4, "overflow": 700.4, "headers": ["config", "accuracy"]},
        {"width": 700.5, "overflow": 0.5, "headers": []},
    ]}
    assert bh.overflowing_tables(measure) == [
        "table 2 [config | accuracy] is 1400px wide, 700px past the 700px content column"
    ]


def test_code_marks_in_glued_text_names_them():
    assert bh.code_marks_in_glued_text(["0.97", "minilm, protocol full"]) == []
    found = bh.code_marks_in_glued_text(["model `minilm` (6 layers)", "1.93"])
    assert found == ["1 glued text(s) with a literal backtick:", "  model `minilm` (6 layers)"]
