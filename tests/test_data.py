"""Reading SST-2 folders: the real layout, and one clear error per kind of damage."""

from pathlib import Path

import pytest

from crisp.study.data import DataError, load_sst2, read_glue_tsv
from conftest import synthetic_rows, write_tsv

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"


def test_reads_folder_in_file_order(sst2_dir):
    splits = load_sst2(sst2_dir)
    assert set(splits) == {"train", "dev", "test"}
    first = (sst2_dir / "dev.tsv").read_text().splitlines()[1].split("\t")
    assert splits["dev"].sentences[0] == first[0] and splits["dev"].labels[0] == int(first[1])
    assert len(splits["train"]) == 96


def test_environment_variable_selects_folder(sst2_dir, monkeypatch):
    monkeypatch.setenv("CRISP_SST2_DIR", str(sst2_dir))
    assert len(load_sst2()["dev"]) == 40


def test_test_split_is_optional(tmp_path):
    write_tsv(tmp_path / "train.tsv", synthetic_rows(5, 0))
    write_tsv(tmp_path / "dev.tsv", synthetic_rows(5, 1))
    assert set(load_sst2(tmp_path)) == {"train", "dev"}


@pytest.mark.skipif(not SHARED.is_dir(), reason="real SST-2 copy not beside the checkout")
def test_real_sst2_sizes():
    splits = load_sst2(SHARED)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [67349, 872, 1821]


BAD = {
    "wrong header": (b"text\tlabel\nfine\t1\n", "line 1: header"),
    "empty file": (b"", "file is empty"),
    "header only": (b"sentence\tlabel\n", "no examples"),
    "label 2": (b"sentence\tlabel\nfine\t1\nodd\t2\n", "line 3: label '2' is not 0 or 1"),
    "missing tab": (b"sentence\tlabel\nfine 1\n", "line 2: expected 2 tab-separated fields"),
    "extra tab": (b"sentence\tlabel\nfine\t1\t0\n", "line 2: expected 2 tab-separated fields (sentence, label), found 3"),
    "bad byte": (b"sentence\tlabel\nfine\t1\ncaf\xe9\t0\n", "line 3: not valid UTF-8"),
    "empty sentence": (b"sentence\tlabel\n \t1\n", "line 2: empty sentence"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_file_names_file_and_line(tmp_path, case):
    content, message = BAD[case]
    path = tmp_path / "dev.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_glue_tsv(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_file_and_folder(tmp_path):
    write_tsv(tmp_path / "train.tsv", synthetic_rows(5, 0))
    with pytest.raises(DataError, match="dev.tsv: file not found"):
        load_sst2(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_sst2(tmp_path / "nowhere")
