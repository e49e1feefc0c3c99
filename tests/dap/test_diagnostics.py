"""The DAPPER run diagnostics of issue 14: persona usage (collapse) and the mini-batch criterion."""

from types import SimpleNamespace

import numpy as np
import pytest

from flowjax_thesis.experiments.dapper import minibatch_criterion
from flowjax_thesis.models.dap import evaluation as ev
from flowjax_thesis.models.dap.state import DapConfig
from flowjax_thesis.models.dap.synthetic import synthetic_corpus


def test_persona_usage_counts_collapse():
    # four authors over three personas: three sit on persona 0 (two of them concentrated), one
    # is split between personas 1 and 2
    delta = np.array([[95, 3, 2], [80, 10, 10], [99, 0.5, 0.5], [2, 49, 49]], float)
    usage = ev.persona_usage(SimpleNamespace(delta=delta))
    assert usage == {
        "authors_concentrated": 0.5,
        "personas_dominant": 2,
        "personas_with_mass": 3,
        "largest_dominant_share": 0.75,
    }
    collapsed = ev.persona_usage(SimpleNamespace(delta=np.tile([[97.0, 2.0, 1.0]], (5, 1))))
    assert collapsed["largest_dominant_share"] == 1.0 and collapsed["personas_dominant"] == 1
    assert collapsed["personas_with_mass"] == 1


def test_minibatch_criterion_end_gap_and_drops():
    full = [-8.0, -7.9, -7.85]
    ok = [-7.95, -7.90, -7.89]  # 0.04 below full at the end, never below its running best
    late_drop = [-7.8, -7.83, -7.84]  # ends above full but falls 0.04 below its best
    far = [-8.2, -8.0, -7.95]  # monotone, but 0.10 below full at the end
    curves = [{"full": full, "ok": ok, "drop": late_drop, "far": far}]
    out = minibatch_criterion(curves, "full", {"a": "ok", "b": "drop", "c": "far"})
    assert out["a"]["holds"] and out["a"]["full_minus_batch_final"] == [pytest.approx(0.04)]
    assert not out["b"]["holds"]
    assert out["b"]["max_drop_below_running_best"] == [pytest.approx(0.04)]
    assert not out["c"]["holds"] and out["c"]["max_drop_below_running_best"] == [0.0]


def test_dap_transitions_name_what_can_diverge_instead_of_a_learning_rate():
    """The engine's divergence message for DAP/DAPPER names rho_reg and the step sizes."""
    from flowjax_thesis.models.dap.training import DAP_DIVERGENCE_HINT, dapper_transition
    from flowjax_thesis.models.dap.vem import vem_transition

    corpus, _ = synthetic_corpus(num_authors=4, docs_per_author=2, num_times=2)
    cfg = DapConfig(num_topics=3, num_personas=2)
    for transition in (dapper_transition(cfg, corpus), vem_transition(cfg, corpus)):
        assert transition.divergence_hint == DAP_DIVERGENCE_HINT
    assert "no learning rate" in DAP_DIVERGENCE_HINT and "rho_reg" in DAP_DIVERGENCE_HINT


def test_persona_figure_shows_the_most_used_personas():
    delta = np.array([[1.0, 2.0, 90.0, 7.0], [1.0, 50.0, 40.0, 9.0], [1.0, 1.0, 97.0, 1.0]])
    assert ev.most_used_personas(SimpleNamespace(delta=delta), 3) == [2, 1, 3]
