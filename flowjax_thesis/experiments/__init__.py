"""The experiment registry.

An experiment is a function ``run(cfg, run: Run) -> dict`` (the returned dict is written to
``summary.json``) registered with its settings for each profile. The settings are one frozen
dataclass per experiment whose field defaults are the smoke profile; the other profiles are
written as deltas with :func:`dataclasses.replace`::

    @dataclass(frozen=True)
    class RingSettings:
        steps: int = 300
        seeds: tuple[int, ...] = (0,)   # sequences are tuples: settings stay immutable

    RING_SMOKE = RingSettings()
    RING_CPU = replace(RING_SMOKE, steps=20000, seeds=(0, 1, 2))

    @register(
        "vi-planar-ring",
        description="Planar and RealNVP flows on the blog's ring energy (ELBO).",
        smoke=RING_SMOKE, cpu=RING_CPU, full=replace(RING_CPU, ...),
        paper={"source": "blog part 5", ...},   # optional: the published numbers for the report
    )
    def vi_planar_ring(cfg: RingSettings, run): ...   # reads cfg.steps, cfg.seeds, ...

The three profiles must be instances of the same settings class. ``--set key=value`` may only
change existing fields; the value is parsed as JSON (falling back to a plain string) and must keep
the default's type (a list becomes a tuple), and numbers are checked beyond their type
(:func:`check_setting`): every float finite, learning rates > 0, counts and sizes (``steps``,
``epochs``, ``batch_size``, ``num_*``, ``n_*``, ...) >= 1 unless 0 means "none" for that key
(:data:`ZERO_MEANS_NONE`), other ints >= 0.
Besides its own settings, every experiment accepts the :data:`RUN_SETTINGS`
(``--set allow_stand_in=true``; :func:`run_settings`).
Experiments live in modules listed in ``_MODULES`` so that importing this package registers them.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("smoke", "cpu", "full")


@dataclass(frozen=True)
class Experiment:
    name: str
    fn: Callable[[Any, Any], dict]
    profiles: dict[str, Any]  # profile name -> settings instance (a frozen dataclass)
    description: str = ""
    paper: dict = field(default_factory=dict)

    def config(self, profile: str = "smoke", overrides: dict[str, str] | None = None):
        """The settings of ``profile`` with ``overrides`` (strings, as on the command line)."""
        if profile not in self.profiles:
            raise ValueError(
                f"unknown profile {profile!r} for experiment {self.name!r}; "
                f"expected one of {sorted(self.profiles)}"
            )
        cfg = self.profiles[profile]
        valid = setting_names(cfg)
        changes = {}
        for key, text in (overrides or {}).items():
            if key in RUN_SETTINGS:  # how the run goes, not what it computes: run_settings()
                continue
            if key not in valid:
                raise KeyError(
                    f"unknown setting {key!r} for experiment {self.name!r}; "
                    f"valid settings: {', '.join(sorted(valid))} (and, for every experiment, "
                    f"{', '.join(RUN_SETTINGS)})"
                )
            value = check_setting(key, parse_value(key, text, getattr(cfg, key)))
            changes[key] = _as_tuples(value)
        return dataclasses.replace(cfg, **changes)


# Settings every experiment accepts (``--set allow_stand_in=true``): how a run goes rather than
# what it computes, so they are not fields of the experiments' settings classes.
# ``allow_stand_in``: at the ``full`` profile, train on the offline stand-in when the real data
# set is missing instead of stopping (flowjax_thesis.data.availability).
RUN_SETTINGS: dict[str, Any] = {"allow_stand_in": False}


def run_settings(overrides: dict[str, str] | None) -> dict[str, Any]:
    """The :data:`RUN_SETTINGS` with the values ``overrides`` (``--set``) give them."""
    out = dict(RUN_SETTINGS)
    for key, text in (overrides or {}).items():
        if key in RUN_SETTINGS:
            out[key] = check_setting(key, parse_value(key, text, RUN_SETTINGS[key]))
    return out


def setting_names(cfg) -> list[str]:
    """The field names of a settings instance."""
    return [f.name for f in dataclasses.fields(cfg)]


def _as_tuples(value: Any) -> Any:
    """Lists (also nested ones) as tuples, so that a settings instance stays immutable."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _bare_list(text: str) -> list:
    """``[a,b]`` or ``a,b`` without JSON's quotes: each item parsed alone (``[a, 2]`` ->
    ``["a", 2]``)."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return [_json_or_text(item.strip()) for item in inner.split(",") if item.strip()]


def parse_value(key: str, text: Any, default: Any) -> Any:
    """Parses a ``--set`` value so that it has the type of ``default``. A list setting also
    takes its items without JSON's quotes (``posteriors=[gaussian,iaf]`` or
    ``posteriors=gaussian,iaf``)."""
    if not isinstance(text, str):
        value = text
    else:
        value = _json_or_text(text)
        if isinstance(default, (list, tuple)) and value is text:
            value = _bare_list(text)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(f"setting {key!r} expects true or false, got {text!r}")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (int, float, str)):
        value = [value]
    if default is not None and not isinstance(value, type(default)):
        if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
            return type(default)(value)
        raise ValueError(
            f"setting {key!r} expects a {type(default).__name__} like {default!r}, got {text!r}"
        )
    return value


# Int settings for which 0 is meaningful ("none", "no limit", "skip this stage", seed 0).
ZERO_MEANS_NONE = frozenset(
    {
        "seed",
        "seeds",
        "max_docs",  # 0: no limit
        "n_test",  # 0: the whole test set
        "joint_steps",  # 0: skip joint training
        "finetune_passes",
        "finetune_steps",
        "anneal_steps",  # 0: no annealing
        "warmup_steps",
        "realnvp_layers",  # 0: no RealNVP model
        "depths",  # 0: the base model alone
        "plateau_patience",  # 0: no plateau schedule
        "matched_latent_size",  # 0: match the largest latent size of the sweep
    }
)
# Ints that count or size something: >= 1 (unless in ZERO_MEANS_NONE); other ints are >= 0.
_COUNT = re.compile(
    r"^(num|n|max)_|(^|_)(steps?|epochs?|batch_sizes?|layers|samples|sizes?|chunk|width|hidden"
    r"|units|features|levels|components|topics|draws|iter|passes|restarts|length|latent|chains"
    r"|warmup|growth|dim|n|m|every|respondents|states|scales|words|per_\w+)$"
)
# Floats that must be > 0 or >= 0 by their name, and a few intervals; every float is finite.
_POSITIVE_FLOAT = re.compile(
    r"(^|_)(lr|learning_rate|noise|variance|width|budget|days|nats|nu|std|sigma)$"
)
_NONNEGATIVE_FLOAT = re.compile(
    r"(^|_)(regs?|rho|ridge|regularization|temperatures?|max|beta0|tau0)$"
)
# key -> (low, high, low included, high included, text)
_FLOAT_INTERVALS = {
    "dropout_rate": (0.0, 1.0, True, False, "in [0, 1)"),
    "kappa": (0.5, 1.0, False, True, "in (0.5, 1] (the forgetting rate)"),
}


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _number_problem(key: str, x) -> str | None:
    """What ``x`` should have been for setting ``key``, or None if it is fine."""
    if isinstance(x, float):
        if not math.isfinite(x):
            return "a finite number"
        if key in _FLOAT_INTERVALS:
            lo, hi, lo_in, hi_in, text = _FLOAT_INTERVALS[key]
            above = lo <= x if lo_in else lo < x
            below = x <= hi if hi_in else x < hi
            return None if (above and below) else f"a number {text}"
        if _POSITIVE_FLOAT.search(key) and x <= 0:
            return "a finite number > 0"
        if _NONNEGATIVE_FLOAT.search(key) and x < 0:
            return "a finite number >= 0"
        return None
    if key in ZERO_MEANS_NONE:
        return None if x >= 0 else "an int >= 0"
    if _COUNT.search(key):
        return None if x >= 1 else "an int >= 1"
    return None if x >= 0 else "an int >= 0"


def check_setting(key: str, value: Any) -> Any:
    """Checks a parsed ``--set`` value beyond its type; returns it unchanged.

    Raises ``ValueError("setting 'steps' must be an int >= 1, got 0")``-style messages. Lists are
    checked element by element with the key's rule; strings and booleans pass.
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    for x in items:
        if isinstance(x, (list, tuple)):
            check_setting(key, x)
            continue
        if not _is_number(x):
            continue
        problem = _number_problem(key, x)
        if problem is not None:
            where = f" (in {value!r})" if items is value else ""
            raise ValueError(f"setting {key!r} must be {problem}, got {x!r}{where}")
    return value


_REGISTRY: dict[str, Experiment] = {}

# Modules that register experiments on import (each team adds its own module here).
_MODULES = (
    "flowjax_thesis.experiments.gbnf",
    "flowjax_thesis.experiments.flows_2d",
    "flowjax_thesis.experiments.dapper",
    "flowjax_thesis.experiments.dapper_sotu",
    "flowjax_thesis.experiments.dapper_synthetic",
    "flowjax_thesis.experiments.bayes_vi",
    "flowjax_thesis.experiments.psr_vectors",
    "flowjax_thesis.experiments.psr_images",
    "flowjax_thesis.experiments.vae",
    "flowjax_thesis.experiments.compressive",
)


def register(name: str, *, description: str = "", paper: dict | None = None, **profiles):
    """Decorator that registers an experiment function under ``name`` with its settings for the
    profiles ``smoke``, ``cpu`` and ``full`` (instances of one frozen dataclass)."""
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise ValueError(f"experiment {name!r}: unknown profiles {unknown}; expected {PROFILES}")
    missing = [p for p in PROFILES if p not in profiles]
    if missing:
        raise ValueError(f"experiment {name!r} lacks profiles {missing}")
    cls = type(profiles["smoke"])
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise TypeError(
            f"experiment {name!r}: profiles must be frozen dataclass instances, "
            f"got {cls.__name__} for 'smoke'"
        )
    for p in PROFILES:
        cfg = profiles[p]
        if type(cfg) is not cls:
            raise TypeError(
                f"experiment {name!r}: profile {p!r} is a {type(cfg).__name__}, "
                f"expected a {cls.__name__} like 'smoke'"
            )
        for key in setting_names(cfg):
            if isinstance(getattr(cfg, key), (list, dict, set)):
                raise TypeError(
                    f"experiment {name!r}: profile {p!r} setting {key!r} is a mutable "
                    f"{type(getattr(cfg, key)).__name__}; use a tuple"
                )

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"experiment {name!r} registered twice")
        _REGISTRY[name] = Experiment(name, fn, dict(profiles), description, paper or {})
        return fn

    return wrap


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown experiment {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
