"""The adaptive allocation rule and controller."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crisp import CONFIGS, SparsityController, allocate


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12), st.sampled_from([0.0, 0.3, 0.6, 0.8, 0.95]))
def test_allocation_mean_and_bounds(conc, target):
    ratios = allocate(conc, target)
    assert len(ratios) == len(conc)
    assert all(0.0 <= r <= 0.95 for r in ratios)
    assert abs(sum(ratios) / len(ratios) - target) < 0.005


def test_allocation_follows_concentration():
    ratios = allocate([0.1, 0.2, 0.4], 0.6)
    assert ratios[0] < ratios[1] < ratios[2]
    assert allocate([0.3, 0.3], 0.8) == [0.8, 0.8]


def test_allocation_rejects_impossible_target():
    with pytest.raises(ValueError):
        allocate([0.1, 0.2], 0.99)


def test_controller_is_causal_and_keeps_the_mean():
    ctl = SparsityController(CONFIGS["aggressive_sparse"], 3)
    assert ctl.ratios == [0.8] * 3  # no history yet: the target everywhere
    for conc in ([0.2, 0.5, 0.9], [0.1, 0.5, 0.9]):
        for layer, c in enumerate(conc):
            ctl.observe(layer, torch.tensor(c))
        ctl.step()
        assert abs(sum(ctl.ratios) / 3 - 0.8) < 0.005
    assert ctl.ratios[0] < ctl.ratios[1] <= ctl.ratios[2] == 0.95  # clipped at the top
    saved = ctl.state_dict()
    other = SparsityController(CONFIGS["aggressive_sparse"], 3)
    other.load_state_dict(saved)
    assert other.ratios == ctl.ratios and other.running == ctl.running


def test_uniform_controller_never_moves():
    ctl = SparsityController(CONFIGS["uniform_sparse"], 2)
    ctl.observe(0, torch.tensor(0.1))
    ctl.observe(1, torch.tensor(0.9))
    ctl.step()
    assert ctl.ratios == [0.8, 0.8]


def test_adaptive_ratios_under_torch_compile_move_without_recompiling():
    """Under torch.compile the ratios reach the graph as a tensor updated in place: new ratios
    every step, no new graph, and no graph break inside the attention rule."""
    import numpy as np
    import torch._dynamo
    from torch._dynamo.utils import counters

    import crisp
    from crisp.study import bench

    torch.manual_seed(0)
    model = bench.build_model("tiny").train()
    state = crisp.enable(model, crisp.CONFIGS["aggressive_sparse"])
    batch = bench.make_batches(np.array([5, 9, 12]), 3, 1)[0]
    torch._dynamo.reset()
    assert torch._dynamo.explain(lambda b: model(**b).loss)(batch).graph_break_count == 0
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, dynamic=True, backend="eager")
    compiled(**batch)
    compiled(**batch)  # transformers sets config.problem_type on the first call: one recompile there
    graphs, seen = counters["stats"]["unique_graphs"], [list(state.controller.ratios)]
    for _ in range(3):
        compiled(**batch)
        seen.append(list(state.controller.ratios))
    assert counters["stats"]["unique_graphs"] == graphs
    assert all(a != b for a, b in zip(seen, seen[1:]))
    assert all(abs(sum(r) / len(r) - 0.8) < 1e-6 for r in seen)
