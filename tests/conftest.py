"""Shared fixtures: a synthetic SST-2-format folder (never real SST-2 text) and tiny models."""

import os
import random
import tempfile

import pytest
import torch

DEVICE_ENV = "CRISP_TEST_DEVICE"  # e.g. CRISP_TEST_DEVICE=cuda python -m pytest tests/test_device.py
CHECK_MEMO_ENV = "CRISP_CHECK_MEMO"  # crisp.analysis.summary.check's memo folder (see pytest_configure)


def pytest_configure(config):
    # One session recomputes each committed summary once: the book build and the nbval kernels (which inherit
    # this environment) share a fresh memo folder, so the chapters that read one summary share its check.
    os.environ.setdefault(CHECK_MEMO_ENV, tempfile.mkdtemp(prefix="crisp-summary-checks-"))


@pytest.fixture(autouse=True)
def _check_without_memo(request, monkeypatch):
    """Unit tests call summary.check themselves and expect it to recompute: no memo for them (the book build in
    test_book_browser.py keeps it)."""
    if request.node.path.name != "test_book_browser.py":
        monkeypatch.delenv(CHECK_MEMO_ENV, raising=False)


def pytest_addoption(parser):
    parser.addoption("--crisp-device", default=os.environ.get(DEVICE_ENV, "cpu"),
                     help=f"device for the device tests (tests/test_device.py): cpu, cuda, cuda:1 ... "
                          f"(default: ${DEVICE_ENV}, else cpu). CI runs on cpu.")


@pytest.fixture(scope="session")
def device(request):
    """The torch device the device-parametrized tests run on (``--crisp-device`` / ``$CRISP_TEST_DEVICE``)."""
    name = request.config.getoption("--crisp-device")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise pytest.UsageError(f"--crisp-device {name!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--crisp-device {name!r}: torch sees no CUDA device on this machine")
    return dev

POSITIVE = ["good", "great", "wonderful", "moving", "funny", "smart"]
NEGATIVE = ["bad", "dull", "boring", "awful", "messy", "tired"]
FILLER = ["the", "film", "story", "was", "a", "plot", "acting", "really", "quite", "and"]


def synthetic_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(1, 12)) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words) + " ", label))
    return rows


def write_tsv(path, rows, header="sentence\tlabel"):
    path.write_text(header + "\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")


@pytest.fixture(scope="session")
def sst2_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sst2")
    write_tsv(folder / "train.tsv", synthetic_rows(96, 1))
    write_tsv(folder / "dev.tsv", synthetic_rows(40, 2))
    write_tsv(folder / "test.tsv", synthetic_rows(30, 3))
    return folder


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
