"""End-to-end: every experiment's smoke profile through the CLI, once; one experiment per chapter
killed with SIGKILL after its first checkpoint and resumed; every notebook executed.

Marked ``e2e``: not in the default run (``python -m pytest``), run by ``python -m pytest -m e2e``
(CI runs both).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowjax_thesis import experiments

pytestmark = pytest.mark.e2e

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# one experiment per chapter is killed and resumed; the others run once
RESUMED = {
    "vi-planar-ring",  # foundation
    "gbnf-toy-density",  # GBNF
    "vae-flows",  # VAE
    "compressive-latent-sweep",  # compressive
    "psr-student-teacher",  # super-resolution
    "dapper-synthetic",  # DAPPER
    "bayes-vi",  # Bayesian VI
}
SMALL = {
    "NOTEBOOK_STEPS": "150",
    "NOTEBOOK_EPOCHS": "10",
    "NOTEBOOK_MAX_DOCS": "300",
    "FLOWJAX_NB_SMALL": "1",
}


def cli(*args, wait=True):
    env = dict(os.environ, MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "flowjax_thesis.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)


def check_outputs(out: Path, name: str) -> dict:
    for f in ("config.json", "summary.json", "log.txt", "metrics.jsonl"):
        assert (out / f).exists(), f
    config = json.loads((out / "config.json").read_text())
    assert config["experiment"] == name and config["profile"] == "smoke"
    assert list((out / "figures").glob("*.png")), "every experiment draws at least one figure"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [
        json.dumps(
            {k: v for k, v in r.items() if not isinstance(v, (int, float))} | {"s": r["step"]},
            sort_keys=True,
        )
        for r in records
    ]
    dupes = {k for k in keys if keys.count(k) > 1}
    assert not dupes, f"duplicated (tags, step) records: {sorted(dupes)[:3]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary and "wall_seconds" in summary
    return summary


def numbers(summary: dict) -> dict:
    """The summary without its timings (which differ between runs)."""
    drop = ("seconds", "time", "wall", "per_second")
    if isinstance(summary, dict):
        return {k: numbers(v) for k, v in summary.items() if not any(d in k for d in drop)}
    if isinstance(summary, list):
        return [numbers(v) for v in summary]
    return summary


def first_checkpoint(out: Path) -> bool:
    root = out / "checkpoints"
    return root.exists() and any(p.name.isdigit() for p in root.glob("*/*"))


@pytest.mark.parametrize("name", sorted(set(experiments.names()) - RESUMED))
def test_smoke_profile_runs_end_to_end(name, tmp_path):
    out = tmp_path / name
    proc = cli("run", name, "--profile", "smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_outputs(out, name)


@pytest.mark.parametrize("name", sorted(RESUMED))
def test_killed_run_resumes_to_the_same_summary(name, tmp_path):
    straight = tmp_path / "straight"
    proc = cli("run", name, "--profile", "smoke", "--out", str(straight))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = check_outputs(straight, name)

    out = tmp_path / "killed"
    run = cli("run", name, "--profile", "smoke", "--out", str(out), wait=False)
    deadline = time.time() + 900
    while run.poll() is None and not first_checkpoint(out) and time.time() < deadline:
        time.sleep(0.05)
    killed = run.poll() is None
    if killed:
        os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert first_checkpoint(out), "the experiment wrote no checkpoint into its run directory"
    resumed = cli("run", name, "--profile", "smoke", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    if killed:
        assert "resumed from checkpoint" in resumed.stdout
    assert numbers(check_outputs(out, name)) == numbers(expected)


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs(name, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
