"""Experiment settings: one frozen dataclass per experiment, profiles written as deltas.

The deltas are read from the modules' source (the keywords of ``replace(...)``), independently of
the instances they build, so a profile that is not a ``replace`` of the smoke (or cpu) profile, or
differs from it where nothing was written, fails here. Writing a value equal to the base's is
allowed (it documents a choice, e.g. ``shock_compare=False`` at cpu).
"""

import ast
import dataclasses
import importlib
import inspect
import json

import pytest

from flowjax_thesis import cli, experiments
from flowjax_thesis.experiments import Experiment, register


def _is_tuple_tree(value) -> bool:
    if isinstance(value, tuple):
        return all(_is_tuple_tree(v) for v in value)
    return not isinstance(value, (list, dict, set))


@pytest.mark.parametrize("name", experiments.names())
def test_every_profile_builds_as_one_frozen_settings_class(name):
    exp = experiments.get(name)
    smoke = exp.config("smoke")
    cls = type(smoke)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert smoke == cls()  # the field defaults are the smoke profile
    for profile in experiments.PROFILES:
        cfg = exp.config(profile)
        assert type(cfg) is cls
        for f in dataclasses.fields(cfg):
            assert _is_tuple_tree(getattr(cfg, f.name)), (name, profile, f.name)
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.seed = 1  # noqa: B003 (any attribute: the instance is frozen)
        json.dumps(cli.config_record(name, profile, cfg))  # config.json can be written


def _written_deltas(module) -> dict[str, tuple[str, set[str]]]:
    """NAME -> (BASE, written keys) for every ``NAME = replace(BASE, k=...)`` of ``module``."""
    out = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        if getattr(call.func, "id", None) == "replace" and isinstance(call.args[0], ast.Name):
            out[node.targets[0].id] = (call.args[0].id, {kw.arg for kw in call.keywords})
    return out


@pytest.mark.parametrize("name", experiments.names())
def test_cpu_and_full_differ_from_their_base_only_where_written(name):
    exp = experiments.get(name)
    module = importlib.import_module(exp.fn.__module__)
    deltas = _written_deltas(module)
    for profile in ("cpu", "full"):
        cfg = exp.profiles[profile]
        # the module-level name that holds this profile
        (var,) = [v for v in deltas if getattr(module, v) is cfg]
        base_name, written = deltas[var]
        base = getattr(module, base_name)
        assert base in (exp.profiles["smoke"], exp.profiles["cpu"])
        differ = {
            f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)
        }
        assert differ, (name, profile, "identical to its base")
        assert differ <= written, (name, profile, "differs where not written", differ - written)


def test_unknown_setting_names_every_valid_field():
    exp = experiments.get("vi-planar-ring")
    with pytest.raises(KeyError) as err:
        exp.config("smoke", {"stepz": "3"})
    text = err.value.args[0]
    assert "unknown setting 'stepz'" in text
    for f in dataclasses.fields(exp.profiles["smoke"]):
        assert f.name in text


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("steps", "1.5", "'steps' expects a int"),
        ("steps", "[1, 2]", "'steps' expects a int"),
        ("lr", "fast", "'lr' expects a float"),
        ("seeds", '{"a": 1}', "'seeds' expects a tuple"),
        ("steps", "0", "'steps' must be an int >= 1, got 0"),
    ],
)
def test_wrongly_typed_setting_is_refused(key, text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        experiments.get("vi-planar-ring").config("smoke", {key: text})


def test_overrides_change_only_their_fields_and_lists_become_tuples():
    exp = experiments.get("bayes-vi")
    smoke = exp.config("smoke")
    cfg = exp.config("smoke", {"extra_variants": '[["realnvp", "iwelbo"]]', "steps": "7"})
    assert cfg.extra_variants == (("realnvp", "iwelbo"),)
    assert cfg.steps == 7
    assert dataclasses.replace(cfg, extra_variants=(), steps=smoke.steps) == smoke
    assert exp.config("smoke") == smoke  # the registered profile is untouched


@pytest.mark.parametrize("text", ['["online", "batch"]', "[online,batch]", "online, batch"])
def test_a_list_setting_takes_its_items_with_or_without_json_quotes(text):
    cfg = experiments.get("dapper-sotu").config("smoke", {"gensim_modes": text})
    assert cfg.gensim_modes == ("online", "batch")


def test_bare_list_items_keep_their_json_types():
    cfg = experiments.get("gbnf-density-matching").config("smoke", {"seeds": "3,4"})
    assert cfg.seeds == (3, 4)


def test_resume_treats_saved_lists_as_the_tuples_of_the_settings(tmp_path):
    """config.json holds JSON lists; the settings hold tuples (also nested): the same config."""
    name, profile = "bayes-vi", "cpu"
    cfg = experiments.get(name).config(profile)
    assert cfg.extra_variants and isinstance(cfg.extra_variants[0], tuple)
    record = json.loads(json.dumps(cli.config_record(name, profile, cfg)))
    assert isinstance(record["extra_variants"][0], list)
    assert set(record) == {"experiment", "profile"} | {f.name for f in dataclasses.fields(cfg)}
    (tmp_path / "config.json").write_text(json.dumps(record))
    cli.check_resume(str(tmp_path), name, profile, cfg, force=False)  # no error: equal
    changed = experiments.get(name).config(profile, {"extra_variants": '[["realnvp", "elbo"]]'})
    with pytest.raises(cli.UserError, match="extra_variants"):
        cli.check_resume(str(tmp_path), name, profile, changed, force=False)
    assert json.loads((tmp_path / "config.json").read_text()) == record  # untouched


@dataclasses.dataclass(frozen=True)
class _Toy:
    steps: int = 3
    seeds: tuple[int, ...] = (0,)


@dataclasses.dataclass
class _Mutable:
    steps: int = 3


@dataclasses.dataclass(frozen=True)
class _Other:
    steps: int = 3


@pytest.mark.parametrize(
    ("profiles", "error", "message"),
    [
        (dict(smoke=_Toy(), cpu=_Toy()), ValueError, "lacks profiles \\['full'\\]"),
        (dict(smoke=_Toy(), cpu=_Toy(), full=_Other()), TypeError, "'full' is a _Other"),
        (dict(smoke=dict(steps=3), cpu={}, full={}), TypeError, "frozen dataclass"),
        (dict(smoke=_Mutable(), cpu=_Mutable(), full=_Mutable()), TypeError, "frozen"),
        (
            dict(smoke=_Toy(), cpu=_Toy(seeds=[0, 1]), full=_Toy()),
            TypeError,
            "'seeds' is a mutable list; use a tuple",
        ),
    ],
)
def test_register_refuses_profiles_that_are_not_one_frozen_class(profiles, error, message):
    with pytest.raises(error, match=message):
        register("toy-never-registered", **profiles)


def test_config_of_a_toy_experiment():
    exp = Experiment("toy", lambda cfg, run: {}, {"smoke": _Toy(), "cpu": _Toy(steps=9)})
    assert exp.config("cpu", {"seeds": "4"}) == _Toy(steps=9, seeds=(4,))
    with pytest.raises(ValueError, match="unknown profile 'full'"):
        exp.config("full")
