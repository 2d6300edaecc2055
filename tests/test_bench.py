"""The benchmark runs end to end at tiny size (a check that it works, not a timing test)."""

import numpy as np
import pytest
import pandas as pd
import torch

from crisp.study import bench
from crisp.study.cli import main


def test_bench_tiny_runs_and_reports_ratios(tmp_path):
    frame = bench.run(("tiny",), {"L8": (8, 2, 1), "sst2": ("sst2", 4, 2)}, repeats=1, warmup=0,
                      sparsities=(0.8,), sst2_lengths=np.array([3, 5, 9, 12]), progress=False)
    names = {name for name, _ in bench.variants((0.8,))}
    assert set(frame.variant) == names and set(frame["mode"]) == {"train", "infer"}
    eager = frame[frame.variant == "eager"]
    assert np.allclose(eager.ratio_to_eager, 1.0) and np.allclose(eager.paired_ratio, 1.0)
    assert (frame.paired_ratio_q25 <= frame.paired_ratio).all() and (frame.paired_ratio <= frame.paired_ratio_q75).all()
    assert (frame.median_s > 0).all()
    train = frame[frame["mode"] == "train"]
    assert (train.saved_mb > 0).all() and np.allclose(train[train.variant == "eager"].saved_ratio_to_eager, 1.0)
    path = bench.write(frame, tmp_path)
    assert pd.read_csv(path).shape == frame.shape


def test_saved_bytes_sees_attention_size():
    """Doubling the length must roughly quadruple the attention part of what backward keeps."""
    torch.manual_seed(0)
    model = bench.build_model("tiny").train()
    small, big = (bench.saved_bytes(model, bench.make_batches(L, 2, 1)[0]) for L in (64, 128))
    assert big > 2 * small


def test_bench_cli_quick(tmp_path, capsys):
    assert main(["bench", "--shapes", "tiny", "--lengths", "", "--quick", "--repeats", "1", "--warmup", "0",
                 "--output", str(tmp_path)]) == 0
    assert "crisp-0.8-row-uniform" in capsys.readouterr().out
    assert main(["bench", "--shapes", "huge"]) == 2


def test_nostats_variant_switches_statistics_off_and_keeps_the_output():
    """The ``-nostats`` variant runs the same rule without recording realized sparsity."""
    torch.manual_seed(0)
    model = bench.build_model("tiny").eval()
    batch = bench.make_batches(np.array([3, 7, 12]), 3, 1)[0]
    config = dict(bench.variants((0.8,)))["crisp-0.8-row-uniform-nostats"]
    outputs = {}
    for name in ("crisp-0.8-row-uniform", "crisp-0.8-row-uniform-nostats"):
        bench._use(model, name, config)
        model.crisp_state.record_eval = True
        with torch.no_grad():
            outputs[name] = model(**batch).logits
        outputs[name + ":kept"] = float(sum(model.crisp_state.kept))
    assert outputs["crisp-0.8-row-uniform:kept"] > 0 and outputs["crisp-0.8-row-uniform-nostats:kept"] == 0
    assert torch.equal(outputs["crisp-0.8-row-uniform"], outputs["crisp-0.8-row-uniform-nostats"])


def _frame():
    rows = []
    for setting, scale in (("sst2", 1.0), ("sst2-pad512", 20.0)):
        for variant, t in (("eager", 1.0), ("crisp-0.8-row-uniform", 1.05), ("crisp-0.8-row-adaptive", 1.2),
                           ("crisp-0.8-row-uniform-nostats", 1.04)):
            for mode in ("train", "infer"):
                rows.append(dict(model_shape="m", setting=setting, mode=mode, variant=variant, median_s=t * scale,
                                 ratio_to_eager=t, ms_per_sentence=t * scale * 1000 / 64, repeats=3))
    return pd.DataFrame(rows)


def test_summaries_from_a_hand_made_frame():
    head = bench.headline(_frame()).set_index("variant")
    assert head.loc["crisp-0.8-row-uniform", "met"] and not head.loc["crisp-0.8-row-adaptive", "met"]
    cost = bench.statistics_cost(_frame())
    assert len(cost) == 4 and np.allclose(cost.on_over_off, 1.05 / 1.04)
    epoch = bench.padding_epoch(_frame(), sentences=6400).set_index(["variant", "mode"])
    assert np.isclose(epoch.loc[("eager", "train"), "dynamic_s"], 100.0)
    assert np.allclose(epoch.pad512_over_dynamic, 20.0)
    assert bench.padding_epoch(_frame()[lambda f: f.setting == "sst2"]).empty


def test_variant_subset_always_includes_eager_and_rejects_unknown_names(tmp_path, capsys):
    frame = bench.run(("tiny",), {"L8": (8, 2, 1)}, repeats=1, warmup=0, progress=False,
                      only=["crisp-0.8-row-uniform", "crisp-0.8-row-uniform-nostats"])
    assert set(frame.variant) == {"eager", "crisp-0.8-row-uniform", "crisp-0.8-row-uniform-nostats"}
    assert main(["bench", "--shapes", "tiny", "--lengths", "", "--quick", "--variants", "crisp-0.9-row",
                 "--output", str(tmp_path)]) == 2
    assert "unknown variant(s) crisp-0.9-row" in capsys.readouterr().err


def test_headline_prefers_round_by_round_ratios_when_the_file_has_them():
    frame = _frame().assign(paired_ratio=lambda f: f.ratio_to_eager - 0.1, paired_ratio_q25=0.0, paired_ratio_q75=2.0)
    head = bench.headline(frame).set_index("variant")
    assert head.loc["crisp-0.8-row-adaptive", "met"]  # 1.2 - 0.1 <= 1.15


def test_plain_evaluation_records_nothing_but_training_does():
    from crisp import CrispConfig, enable

    torch.manual_seed(0)
    model = bench.build_model("tiny")
    state = enable(model, CrispConfig("u", 0.8))
    batch = bench.make_batches(np.array([4, 9]), 2, 1)[0]
    model.eval()
    with torch.no_grad():
        model(**batch)
    assert float(sum(state.real)) == 0
    model.train()
    model(**batch).loss.backward()
    assert float(sum(state.real)) > 0


def test_extra_saved_per_layer_in_units_of_one_float32_attention_tensor():
    # tiny: 4 heads x 2 layers; batch 2 at L128 -> one float32 [B, H, L, L] per layer, all layers = 1 MiB
    frame = pd.DataFrame([dict(model_shape="tiny", setting="L128", mode="train", variant=v, batch_size=2, saved_mb=mb)
                          for v, mb in (("eager", 10.0), ("crisp-0.8-row-uniform", 10.5), ("crisp-0.8-row-adaptive", 12.0))]
                         + [dict(model_shape="tiny", setting="sst2", mode="train", variant="eager", batch_size=2, saved_mb=1.0)])
    extra = bench.extra_saved_per_layer(frame).set_index("variant").extra_per_layer_in_BHLL_fp32
    assert extra.to_dict() == {"eager": 0.0, "crisp-0.8-row-uniform": 0.5, "crisp-0.8-row-adaptive": 2.0}
    assert bench.extra_saved_per_layer(frame[frame.setting == "sst2"]).empty


def test_compiled_run_reports_no_graph_break_and_no_recompile():
    """The compile benchmark runs (backend 'eager': seconds); a check that it works, not a timing."""
    # widths >= 6: at 0.8 a width of 5 or less keeps at most 1 key, which compiles one more graph (once)
    frame = bench.run_compiled(("tiny",), {"var": (np.array([6, 9, 12]), 3, 2)}, repeats=1, warmup=0,
                               progress=False, backend="eager")
    assert set(frame.variant) == {"eager-dense", "eager-crisp", "compiled-crisp", "compiled-dense"}
    compiled = frame[frame.variant.str.startswith("compiled")]
    assert (compiled.graph_breaks == 0).all() and (compiled.recompiles == 0).all()
    assert (frame.median_s > 0).all()


def _one_file():
    """Two settings of one file: eager, sdpa and the uniform_sparse variant, train only."""
    rows = []
    for setting, bs, n, real, padded, sdpa, crisp in (("sst2", 4, 2, 40, 96, 0.5, 1.2), ("L128", 2, 1, 256, 256, 0.8, 1.6)):
        for variant, ratio in (("eager", 1.0), ("sdpa", sdpa), ("crisp-0.8-row-uniform", crisp)):
            rows.append(dict(model_shape="m", setting=setting, mode="train", variant=variant, batch_size=bs,
                             batches=n, real_tokens=real, padded_tokens=padded, ratio_to_eager=ratio))
    return pd.DataFrame(rows)


def test_ratio_curves_lengths_and_ratios_to_sdpa_within_the_file():
    curves = bench.ratio_curves(_one_file()).set_index(["setting", "variant"])
    assert curves.loc[("sst2", "eager"), "length"] == 12.0 and curves.loc[("sst2", "eager"), "real_length"] == 5.0
    assert curves.loc[("L128", "sdpa"), "length"] == 128.0
    assert curves.loc[("sst2", "crisp-0.8-row-uniform"), "ratio_to_sdpa"] == pytest.approx(1.2 / 0.5)
    assert curves.loc[("L128", "crisp-0.8-row-uniform"), "ratio_to_sdpa"] == pytest.approx(1.6 / 0.8)
    assert curves.loc[("L128", "sdpa"), "ratio_to_sdpa"] == pytest.approx(1.0)
    assert curves.loc[("L128", "crisp-0.8-row-uniform"), "config"] == "uniform_sparse"
    assert curves.loc[("L128", "eager"), "config"] == ""
    no_sdpa = bench.ratio_curves(_one_file()[lambda f: f.variant != "sdpa"])
    assert no_sdpa.ratio_to_sdpa.isna().all()
    with pytest.raises(ValueError, match="one benchmark file"):
        bench.ratio_curves(pd.concat([_one_file(), _one_file()]))


def test_memory_summary_ranges_over_crisp_variants():
    frame = pd.DataFrame([dict(model_shape="tiny", setting=s, mode="train", variant=v, batch_size=2, saved_mb=mb,
                               saved_ratio_to_eager=mb / base)
                          for s, base, rows in (("L128", 10.0, (("eager", 10.0), ("crisp-a", 10.5), ("crisp-b", 12.0))),
                                                ("sst2", 1.0, (("eager", 1.0), ("crisp-a", 1.1))))
                          for v, mb in rows])
    summary = bench.memory_summary(frame).set_index("setting")
    assert summary.loc["L128", "saved_ratio_min"] == pytest.approx(1.05)
    assert summary.loc["L128", "saved_ratio_max"] == pytest.approx(1.2)
    assert summary.loc["L128", "extra_min"] == pytest.approx(0.5) and summary.loc["L128", "extra_max"] == pytest.approx(2.0)
    assert np.isnan(summary.loc["sst2", "extra_min"])
    only_sst2 = bench.memory_summary(frame[frame.setting == "sst2"])
    assert only_sst2.extra_max.dtype == float and only_sst2.extra_max.isna().all()


def test_overhead_reports_paired_ratios_per_precision_and_the_rule_ran():
    """The overhead mode (tiny model, seconds): every (precision, variant), ratios to eager of the same precision,
    the Crisp variants really prune (realized sparsity), targets applied to the paired wall-clock ratio."""
    frame = bench.run_overhead("tiny", np.array([3, 5, 9, 12, 20]), batch_size=4, n_batches=2, repeats=2, warmup=0,
                               progress=False)
    assert set(zip(frame.precision, frame.variant)) == {(p, v) for p in ("fp32", "bf16")
                                                         for v in ("eager", *bench.OVERHEAD_CONFIGS)}
    eager = frame[frame.variant == "eager"]
    assert np.allclose(eager.paired_ratio_wall, 1.0) and np.allclose(eager.paired_ratio_cpu, 1.0)
    for clock in ("wall", "cpu"):
        assert (frame[f"paired_ratio_{clock}_q25"] <= frame[f"paired_ratio_{clock}"]).all()
        assert (frame[f"paired_ratio_{clock}"] <= frame[f"paired_ratio_{clock}_q75"]).all()
    sparsity = frame.set_index(["precision", "variant"]).realized_sparsity
    assert sparsity[("fp32", "baseline")] == 0.0 and sparsity[("bf16", "baseline")] == 0.0
    for p in ("fp32", "bf16"):
        assert 0.5 < sparsity[(p, "uniform_sparse")] < 0.8 and 0.5 < sparsity[(p, "aggressive_sparse")] < 0.8
    assert (frame.met == (frame.paired_ratio_wall <= frame.precision.map(bench.OVERHEAD_TARGETS))).all()
    assert {"cpu_capability", "threads", "native_bf16", "torch", "repeats"} <= set(frame.columns)
    assert (frame.repeats == 2).all() and (frame.threads == torch.get_num_threads()).all()
    with pytest.raises(ValueError, match="unknown precision"):
        bench.run_overhead("tiny", np.array([4]), batch_size=2, n_batches=1, repeats=1, precisions=("fp16",))


def test_overhead_cli_writes_a_labelled_file_that_is_not_a_variant_table(tmp_path):
    assert main(["bench", "--overhead", "--quick", "--lengths", "", "--repeats", "1", "--warmup", "0",
                 "--precisions", "fp32", "--profile", "--output", str(tmp_path)]) == 0
    csv = next(tmp_path.glob("bench-*-tiny-overhead.csv"))
    info = pd.read_json(csv.with_suffix(".json"), typ="series")
    assert info["kind"] == "overhead" and info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["threads"] == torch.get_num_threads() and info["repeats"] == 1 and info["measurement"] is False
    profile = csv.with_name(csv.stem + "-profile.txt").read_text()
    assert "extra_ms" in profile and "total" in profile
    frame = pd.read_csv(csv)
    bench.write(frame, tmp_path / "m", tag="x-overhead", extra={"kind": "overhead"})  # a measurement, own columns
    assert bench.is_measurement(tmp_path / "m" / "bench-cpu-x-overhead.csv")
    assert bench.measurement_files(tmp_path / "m") == []  # the cost chapter's variant tables never include it
