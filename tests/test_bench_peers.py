"""Smoke tests for the peer benchmarks in ``benchmarks/peers`` (few steps each).

The peer libraries are optional (``pip install flowjax_thesis[bench]``): every test that
needs one skips through ``pytest.importorskip`` when it is missing. All but the first
test are marked ``slow`` (run them with ``pytest -m slow tests/test_bench_peers.py``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``benchmarks`` is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.peers import (  # noqa: E402
    PLANAR_PEERS,
    REALNVP_CONFIGS,
    REALNVP_PEERS,
    torch_blog,
)
from benchmarks.peers._common import INSTALL_HINT, require  # noqa: E402

KEYS = {"peer", "version", "steps", "seconds", "compile_seconds", "final_loss"}
NEEDS = {
    "torch_blog": ["torch"],
    "normflows_planar": ["torch", "normflows"],
    "flowjax_planar": ["flowjax"],
    "flowjax_fit_helper": ["flowjax"],
    "flowjax_planar_scan": ["flowjax"],
    "flowjax_realnvp": ["flowjax"],
    "distrax_realnvp": ["distrax"],
    "zuko_realnvp": ["torch", "zuko"],
    "normflows_realnvp": ["torch", "normflows"],
}


def _skip_unless(name: str) -> None:
    for module in NEEDS[name]:
        pytest.importorskip(module)


def _check_record(r: dict, name: str, steps: int) -> None:
    assert KEYS <= set(r)
    assert r["peer"] == name
    assert r["steps"] == steps
    assert r["seconds"] > 0
    assert math.isfinite(r["final_loss"])


def test_missing_peer_names_bench_extra():
    """The error names the missing package and an install command for an extra that exists."""
    import tomllib

    with pytest.raises(ImportError, match=r"flowjax_thesis\[bench\]") as err:
        require("no_such_peer_package_for_flowjax_thesis.sub")
    assert "'no_such_peer_package_for_flowjax_thesis'" in str(err.value)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    extra = INSTALL_HINT.split("[")[1].rstrip("]")
    assert extra in extras and any("flowjax" in dep for dep in extras[extra])


@pytest.mark.slow
def test_torch_blog_loss_finite_and_decreases():
    pytest.importorskip("torch")
    r = torch_blog(steps=300, warmup=5, seed=0)
    _check_record(r, "torch_blog", 300)
    assert math.isfinite(r["first_loss"])
    assert r["final_loss"] < r["first_loss"] - 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PLANAR_PEERS))
def test_planar_peer_smoke(name):
    _skip_unless(name)
    r = PLANAR_PEERS[name](steps=5, K=4, warmup=2, seed=1)
    _check_record(r, name, 5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REALNVP_PEERS))
def test_realnvp_peer_smoke(name):
    _skip_unless(name)
    cfg = dict(REALNVP_CONFIGS["d2"], n_layers=2, hidden=16)
    r = REALNVP_PEERS[name](steps=5, batch=64, warmup=2, seed=1, **cfg)
    _check_record(r, name, 5)


@pytest.mark.slow
def test_cli_prints_json_list():
    pytest.importorskip("torch")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.peers",
            "planar",
            "--steps",
            "3",
            "--peers",
            "torch_blog",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    (record,) = json.loads(proc.stdout)
    _check_record(record, "torch_blog", 3)


@pytest.mark.slow
def test_conv_benchmark_sides_reach_the_same_loss():
    """``bench conv``: flax's layers and ours train the same parameters to the same loss (the
    speed ratio is read at equal answers); each side in its own process."""
    from benchmarks.bench_conv import compare

    row = compare(networks="coupling", steps=2, chunk=1)["networks"]["coupling"]
    assert "error" not in row["ours"] and "error" not in row["flax"], row
    assert row["ours"]["layers"] == "ours" and row["flax"]["layers"] == "flax"
    assert math.isclose(row["final_loss"]["ours"], row["final_loss"]["flax"], rel_tol=1e-5)
    assert row["speedup"] > 0


def test_vae_rounds_report_the_median_ratio_and_keep_the_answers():
    from benchmarks.bench_vae import _compare_rounds

    def rec(seconds, cpu, elbo):
        return {"seconds": seconds, "cpu_seconds": cpu, "test_neg_elbo": elbo}

    rounds = [
        {"ours": rec(4.0, 8.0, 177.71), "torch": rec(3.0, 6.0, 191.94)},
        {"ours": rec(5.0, 9.0, 177.71), "torch": rec(5.0, 9.0, 191.94)},
        {"ours": rec(4.0, 8.0, 177.71), "torch": rec(6.0, 12.0, 191.94)},
        {"ours": {"error": "killed"}, "torch": rec(3.0, 6.0, 191.94)},
    ]
    row = _compare_rounds(rounds)
    assert [r["speedup_vs_torch"] for r in row["rounds"]] == [0.75, 1.0, 1.5]
    assert row["speedup_vs_torch"] == 1.0 and row["speedup_range"] == [0.75, 1.5]
    assert row["cpu_ratio"] == 1.0
    assert row["test_neg_elbo"] == {"ours": 177.71, "torch": 191.94}
    assert row["ours"] is rounds[0]["ours"]
    failed = _compare_rounds([{"ours": {"error": "x"}, "torch": rec(3.0, 6.0, 1.0)}])
    assert "speedup_vs_torch" not in failed and failed["ours"] == {"error": "x"}
