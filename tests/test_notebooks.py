"""Notebooks are executed at small size (their STEPS comes from the environment)."""

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


SMALL = {"NOTEBOOK_STEPS": "150", "NOTEBOOK_EPOCHS": "10", "NOTEBOOK_MAX_DOCS": "300"}
EXPECTED = {"01_flows_quickstart.ipynb": ("ELBO", "True"), "06_dapper.ipynb": ("persona accuracy",)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    for text in EXPECTED[name]:
        assert text in outputs
