"""Results files are written atomically: a crash mid-write leaves the old file whole and no debris."""

import json

import pandas as pd
import pytest

from crisp.study import results


def test_crash_while_writing_json_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    results.write_json(path, {"dev_accuracy": 0.5})

    def explode(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(json, "dumps", explode)
    with pytest.raises(KeyboardInterrupt):
        results.write_json(path, {"dev_accuracy": 0.9})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"dev_accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_crash_while_writing_csv_leaves_nothing(tmp_path):
    class Broken(pd.DataFrame):
        def to_csv(self, handle, **kwargs):
            handle.write("idx,label\n0,")  # half a file...
            raise OSError("disk full")

    with pytest.raises(OSError):
        results.write_csv(tmp_path / "predictions_dev.csv", Broken({"idx": [0], "label": [1]}))
    assert list(tmp_path.iterdir()) == []


def test_written_files_are_readable_by_others(tmp_path):
    results.write_csv(tmp_path / "a.csv", pd.DataFrame({"x": [1]}))
    assert (tmp_path / "a.csv").stat().st_mode & 0o044
