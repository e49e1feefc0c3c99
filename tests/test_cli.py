"""The command line: listing, errors naming what was expected, every experiment's smoke run."""

import pytest

from flowjax_thesis import experiments
from flowjax_thesis.cli import main


def test_list_shows_every_experiment(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in experiments.names():
        assert name in out


def test_unknown_experiment_lists_valid_names(capsys, tmp_path):
    assert main(["run", "no-such-thing", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'no-such-thing'" in err and "vi-planar-ring" in err


def test_unknown_setting_lists_valid_keys(capsys, tmp_path):
    assert main(["run", "vi-planar-ring", "--set", "stepz=3", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown setting 'stepz'" in err and "steps" in err and "batch_size" in err


def test_badly_typed_setting_is_explained(capsys, tmp_path):
    assert main(["run", "vi-planar-ring", "--set", "steps=many", "--out", str(tmp_path / "x")]) == 2
    assert "expects a int" in capsys.readouterr().err


def test_unknown_profile_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["run", "vi-planar-ring", "--profile", "huge"])
    assert "invalid choice" in capsys.readouterr().err


def test_existing_run_directory_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    from flowjax_thesis.cli import fresh_dir

    assert fresh_dir(str(out), resume=False) == f"{out}-2"
    assert (out / "summary.json").read_text() == "{}"
