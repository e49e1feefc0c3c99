"""The README's results table is generated from the committed runs (traceability)."""

import os

import pytest

from flowjax_thesis import cli, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_table_is_the_one_generated_from_docs_results():
    table = report.results_table(os.path.join(ROOT, "docs", "results"))
    assert report.readme_table(os.path.join(ROOT, "README.md")) == table


def test_every_claim_names_an_experiment_and_a_committed_run_or_says_none():
    from flowjax_thesis import experiments

    for claim in report.CLAIMS:
        experiments.get(claim.experiment)  # raises for an unknown experiment
    table = report.results_table(os.path.join(ROOT, "docs", "results"))
    for line in table.splitlines()[2:]:
        assert "`docs/results/" in line or "no committed cpu run yet" in line


def test_stale_readme_is_refused_and_rewritten(tmp_path, capsys):
    results = tmp_path / "results" / "vi-planar-ring"
    results.mkdir(parents=True)
    src = os.path.join(ROOT, "docs", "results", "vi-planar-ring", "summary.json")
    (results / "summary.json").write_text(open(src).read())
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\n| old |\n{report.END}\ntail\n")
    args = ["report", "--results", str(tmp_path / "results")]
    assert cli.main(args + ["--check", str(readme)]) == 2
    assert "differs" in capsys.readouterr().err
    assert cli.main(args + ["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("tail\n") and "| old |" not in text
    assert "log Z 2.313" in text and "no committed cpu run yet" in text
    assert cli.main(args + ["--check", str(readme)]) == 0


def test_readme_without_markers_is_a_clear_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no table here\n")
    with pytest.raises(ValueError, match="markers"):
        report.update_readme(str(readme), "| t |")


def test_compressive_depth_headline_reads_both_directions_from_the_rows():
    from flowjax_thesis.report import _compressive_depth

    def summary(vae_k1):
        rows = [("ppca", 0, 3.0), ("ppca", 1, 2.5), ("vae", 0, 2.6), ("vae", 1, vae_k1)]
        return {
            "data": {"name": "digits", "stand_in": True},
            "comparison": [
                {"model": f"{m}_K{k}", "steps/scale": k, "bits/dim": v} for m, k, v in rows
            ],
        }

    good = _compressive_depth(summary(2.4))
    assert "falls with depth" in good and "PPCA worse than VAE at every depth" in good
    assert "stand-in" in good
    bad = _compressive_depth(summary(2.7))
    assert "does NOT fall" in bad and "PPCA NOT worse" in bad
