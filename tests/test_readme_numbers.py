"""The README quotes benchmark numbers (it is read on GitHub, where the book's glue does not reach): each one
quoted here must be what the committed results file says, formatted as the README prints it, and each
met/missed word must follow the file's own ``met`` column."""

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "data" / "bench"


@pytest.fixture(scope="module")
def readme() -> str:
    return " ".join((ROOT / "README.md").read_text().split())  # line breaks inside sentences do not matter


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_long_context_table_is_the_files(readme):
    from crisp.study import bench_longcontext as lc

    frame = pd.read_csv(BENCH / "bench-cpu-longcontext.csv")
    for r in lc.table(frame).itertuples():
        length = f"{r.length // 1024}k"
        if r.status:
            row = f"| {length} | {r.implementation} | not run: {r.status} |"
        else:
            to_eager = "–" if pd.isna(r.time_ratio_to_eager) else f"{r.time_ratio_to_eager:.2f}"
            row = (f"| {length} | {r.implementation} | {r.saved_mb:.0f} | {r.saved_ratio_to_sdpa:.2f} | "
                   f"{r.median_s:.1f} | {to_eager} | {r.time_ratio_to_sdpa:.2f} |")
        assert _flat(row) in readme, row
    time = lc.targets(frame).query("target == 'time ÷ eager'")
    parts = [f"{word} at " + " and ".join(f"{t.length // 1024}k ({t.value:.2f}x)" for t in rows.itertuples())
             for word, rows in (("met", time[time.met]), ("missed", time[~time.met])) if len(rows)]
    assert "time within 2x eager where eager runs, " + " and ".join(parts) in readme


def test_long_context_demo_numbers_are_the_files(readme):
    demo = pd.read_csv(BENCH / "bench-cpu-longcontext-demo32k.csv").set_index("variant")
    chunked, plain = demo.loc["crisp-chunked"], demo.loc["crisp"]
    quoted = [f"peak resident memory {chunked.peak_rss_gib:.2f} GiB", f"{chunked.step_s / 60:.1f} minutes",
              f"forward {chunked.forward_s / 60:.1f}, backward {chunked.backward_s / 60:.1f}",
              f"come to {plain.saved_gib_estimated:.1f} GiB", f"to {plain.peak_rss_gib_estimated:.1f} GiB",
              f"this machine's {plain.machine_memory_gib:.1f} GiB",
              f"capped at {chunked.memory_cap_gib:.0f} GiB"]
    quoted.append("failed: the allocator could not allocate" if not plain.plain_ran else "ran within it")
    for text in quoted:
        assert text in readme, text


@pytest.mark.parametrize("name", ["bench-cpu-minilm-overhead.csv", "bench-cpu-minilm-overhead-bf16.csv"])
def test_overhead_ratios_are_the_files(readme, name):
    frame = pd.read_csv(BENCH / name)
    sparse = frame[frame.variant.isin(["light_sparse", "uniform_sparse", "aggressive_sparse"])]
    for r in frame[frame.variant != "eager"].itertuples():
        quoted = (f"`{r.variant}` {r.paired_ratio_wall:.3f} [{r.paired_ratio_wall_q25:.3f}, "
                  f"{r.paired_ratio_wall_q75:.3f}]")
        assert quoted in readme, quoted
    eager = frame[frame.variant == "eager"].iloc[0]
    assert f"({eager.repeats} rounds after {eager.warmup} warm-up; eager {eager.median_wall_s:.2f} s a step" in readme
    word = "Met." if sparse.met.all() else "**Missed** for the sparse configurations"
    assert word in readme, (name, word)


def test_distilbert_step_in_the_status_is_the_file(readme):
    """The status paragraph's estimate of an MPNet run starts from this file's dense fp32 training step."""
    frame = pd.read_csv(BENCH / "bench-cpu-distilbert.csv")
    eager = frame[(frame.setting == "sst2") & (frame["mode"] == "train") & (frame.variant == "eager")].iloc[0]
    assert f"took {eager.median_s / eager.batches:.1f} s here" in readme
