"""Bad input and faults (issue 13): a table of mistakes a user makes and what each must give.

Every case states its input and the expected outcome:

- ``Raises(exc, phrase)``: that exception type, with ``phrase`` in its message, raised by our
  own code (the innermost frame must be in ``flowjax_thesis``: an error from inside JAX, flax,
  distrax, orbax or Python internals fails the case);
- ``Warns(category, phrase)``: the call succeeds with that warning;
- ``Ok(check)``: the call succeeds and ``check(result)`` is true (a correct result, compared to
  an independent reference where there is one);
- ``Cli(code, phrase)``: ``flowjax-thesis ...`` exits with ``code`` and prints ONE line to stderr
  containing ``phrase`` (no traceback), before any training starts.

Cases that need a fix in a file this suite's author does not own are marked
``xfail(strict=True, reason="needs fix in <file>: ...")``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax_thesis import cli, experiments
from flowjax_thesis.bijectors import Chain, MultiScale, Repeat, make_layer
from flowjax_thesis.flows import Flow, realnvp_flow
from flowjax_thesis.models.dap.corpus import build_corpus, read_dap
from flowjax_thesis.objectives import bits_per_dim, importance_log_evidence, nll
from flowjax_thesis.train import (
    Checkpointer,
    CheckpointError,
    DivergenceError,
    Transition,
    fit,
    fit_ml,
    fit_vi,
    gradient_transition,
)

KEY = jax.random.PRNGKey(0)
NAN, INF = float("nan"), float("inf")


# --- expectations -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Raises:
    exc: type
    phrase: str


@dataclass(frozen=True)
class Warns:
    category: type
    phrase: str


@dataclass(frozen=True)
class Ok:
    check: Any = None


@dataclass(frozen=True)
class Cli:
    code: int
    phrase: str


FOREIGN = (
    "/jax/",
    "/jaxlib/",
    "/flax/",
    "/distrax/",
    "/orbax/",
    "/optax/",
    "/numpy/",
    "/lib/python",
)


def _innermost_file(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    return frames[-1].filename if frames else ""


def check_case(thunk, expect, tmp):
    if isinstance(expect, Raises):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as info:
                thunk(tmp)
        err = info.value
        assert isinstance(err, expect.exc), f"expected {expect.exc.__name__}, got {err!r}"
        assert expect.phrase.lower() in str(err).lower(), f"{expect.phrase!r} not in {str(err)!r}"
        where = _innermost_file(err)
        assert "flowjax_thesis" in where and not any(f in where for f in FOREIGN), (
            f"raised inside a library ({where}), not by flowjax_thesis: {err!r}"
        )
    elif isinstance(expect, Warns):
        with pytest.warns(expect.category) as record:
            thunk(tmp)
        texts = [str(w.message) for w in record]
        assert any(expect.phrase.lower() in t.lower() for t in texts), texts
    elif isinstance(expect, Cli):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(thunk(tmp))
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        assert code == expect.code, (code, lines)
        assert "Traceback" not in err.getvalue()
        errors = [ln for ln in lines if ln.startswith("flowjax-thesis:")]
        assert len(errors) == 1, lines
        assert expect.phrase.lower() in errors[0].lower(), errors[0]
        assert "==" not in out.getvalue(), "the run started before the input was checked"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = thunk(tmp)
        if expect.check is not None:
            assert expect.check(result), result


def case(id_, thunk, expect, xfail: str | None = None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(thunk, expect, id=id_, marks=marks)


def finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree))


# --- shared objects, built once --------------------------------------------------------------
@functools.cache
def flow2():
    flow = realnvp_flow(2, 2, hidden=(8,))
    return flow, flow.init(KEY)


@functools.cache
def cond_flow():
    flow = Flow((make_layer("affine_coupling", hidden=(8,)),), (2,), context_shape=(3,))
    return flow, flow.init(KEY)


@functools.cache
def transition():
    from flowjax_thesis.objectives import max_likelihood_loss

    flow, params = flow2()
    tr = gradient_transition(max_likelihood_loss(flow), optax.adam(1e-2))
    return tr, tr.init(params)


DATA = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
FIT = dict(key=KEY, progress=False)


def log_target(x):
    return -0.5 * jnp.sum(x**2)


# ==============================================================================================
# 1. Layer options (make_layer and the dataclasses): a clear error naming the option
# ==============================================================================================
def layer(name, **kw):
    return lambda tmp: make_layer(name, **kw)


HIDDEN = "hidden must be a tuple of positive ints"
LAYER_OPTIONS = [
    case("unknown-layer", layer("affine"), Raises(KeyError, "registered layers: actnorm")),
    case("unknown-option", layer("affine_coupling", hiden=(8,)), Raises(TypeError, "'hiden'")),
    case(
        "unknown-option-lists-valid",
        layer("maf", bins=3),
        Raises(TypeError, "valid options: kind, hidden, activation, scale_bound"),
    ),
    case("coupling-hidden-int", layer("affine_coupling", hidden=64), Raises(TypeError, HIDDEN)),
    case(
        "coupling-hidden-int-hint", layer("affine_coupling", hidden=64), Raises(TypeError, "(64,)")
    ),
    case("coupling-hidden-zero", layer("affine_coupling", hidden=(0,)), Raises(ValueError, HIDDEN)),
    case("coupling-hidden-neg", layer("affine_coupling", hidden=(-4,)), Raises(ValueError, HIDDEN)),
    case(
        "coupling-hidden-float", layer("affine_coupling", hidden=(8.0,)), Raises(TypeError, HIDDEN)
    ),
    case("coupling-hidden-str", layer("affine_coupling", hidden="64"), Raises(TypeError, HIDDEN)),
    case("coupling-hidden-none", layer("affine_coupling", hidden=None), Raises(TypeError, HIDDEN)),
    case(
        "coupling-hidden-list-ok",
        layer("affine_coupling", hidden=[8, 8]),
        Ok(lambda lay: lay.hidden == (8, 8)),
    ),
    case("coupling-hidden-empty-ok", layer("affine_coupling", hidden=()), Ok()),
    case(
        "coupling-scale-bound-0",
        layer("affine_coupling", scale_bound=0),
        Raises(ValueError, "scale_bound must be a finite number > 0, got 0"),
    ),
    case(
        "coupling-scale-bound-neg",
        layer("affine_coupling", scale_bound=-1.0),
        Raises(ValueError, "scale_bound"),
    ),
    case(
        "coupling-scale-bound-inf",
        layer("affine_coupling", scale_bound=INF),
        Raises(ValueError, "scale_bound"),
    ),
    case(
        "coupling-scale-bound-nan",
        layer("affine_coupling", scale_bound=NAN),
        Raises(ValueError, "scale_bound"),
    ),
    case(
        "coupling-scale-bound-str",
        layer("affine_coupling", scale_bound="2"),
        Raises(TypeError, "scale_bound"),
    ),
    case(
        "spline-bins-1",
        layer("spline_coupling", num_bins=1),
        Raises(ValueError, "num_bins must be an int >= 2"),
    ),
    case("spline-bins-0", layer("spline_coupling", num_bins=0), Raises(ValueError, "num_bins")),
    case(
        "spline-bins-float", layer("spline_coupling", num_bins=2.5), Raises(TypeError, "num_bins")
    ),
    case(
        "spline-bins-bool", layer("spline_coupling", num_bins=True), Raises(TypeError, "num_bins")
    ),
    case(
        "spline-range-0",
        layer("spline_coupling", spline_range=0.0),
        Raises(ValueError, "spline_range must be a finite number > 0"),
    ),
    case(
        "spline-range-neg",
        layer("spline_coupling", spline_range=-3.0),
        Raises(ValueError, "spline_range"),
    ),
    case(
        "spline-range-inf",
        layer("spline_coupling", spline_range=INF),
        Raises(ValueError, "spline_range"),
    ),
    case(
        "coupling-conv-width-0",
        layer("affine_coupling", conv_width=0),
        Raises(ValueError, "conv_width must be an int >= 1"),
    ),
    case(
        "coupling-conv-depth-neg",
        layer("affine_coupling", conv_depth=-1),
        Raises(ValueError, "conv_depth"),
    ),
    case(
        "coupling-activation",
        layer("affine_coupling", activation="sigmoid"),
        Raises(ValueError, "activation must be one of"),
    ),
    case(
        "coupling-activation-none",
        layer("affine_coupling", activation=None),
        Raises(ValueError, "'tanh'"),
    ),
    case(
        "coupling-transform",
        layer("affine_coupling", transform="affin"),
        Raises(ValueError, "transform must be one of"),
    ),
    case(
        "coupling-mask",
        layer("affine_coupling", mask="stripes"),
        Raises(ValueError, "mask must be one of"),
    ),
    case(
        "coupling-parity-2",
        layer("affine_coupling", parity=2),
        Raises(ValueError, "parity must be one of 0, 1"),
    ),
    case("coupling-parity-neg", layer("affine_coupling", parity=-1), Raises(ValueError, "parity")),
    case("maf-hidden-int", layer("maf", hidden=32), Raises(TypeError, HIDDEN)),
    case("maf-hidden-empty", layer("maf", hidden=()), Raises(ValueError, HIDDEN)),
    case("iaf-hidden-zero", layer("iaf", hidden=(16, 0)), Raises(ValueError, HIDDEN)),
    case(
        "maf-kind", layer("maf", kind="naf"), Raises(ValueError, "kind must be one of 'maf', 'iaf'")
    ),
    case("iaf-scale-bound-0", layer("iaf", scale_bound=0.0), Raises(ValueError, "scale_bound")),
    case("maf-activation", layer("maf", activation="swish"), Raises(ValueError, "activation")),
    case(
        "actnorm-min-std-0",
        layer("actnorm", min_std=0.0),
        Raises(ValueError, "min_std must be a finite number > 0"),
    ),
    case("actnorm-min-std-nan", layer("actnorm", min_std=NAN), Raises(ValueError, "min_std")),
    case("actnorm-hidden-int", layer("actnorm", hidden=32), Raises(TypeError, HIDDEN)),
    case(
        "conv1x1-seed-neg",
        layer("conv1x1", seed=-1),
        Raises(ValueError, "seed must be an int >= 0"),
    ),
    case(
        "conv1x1-init-scale-nan", layer("conv1x1", init_scale=NAN), Raises(ValueError, "init_scale")
    ),
    case("conv1x1-hidden-neg", layer("conv1x1", hidden=(-3,)), Raises(ValueError, HIDDEN)),
    case(
        "sylvester-kind",
        layer("sylvester_orthogonal", kind="qr"),
        Raises(ValueError, "kind must be one of"),
    ),
    case(
        "sylvester-num-ortho-0",
        layer("sylvester_orthogonal", num_ortho=0),
        Raises(ValueError, "num_ortho must be an int >= 1"),
    ),
    case(
        "sylvester-householder-0",
        layer("sylvester_householder", num_householder=0),
        Raises(ValueError, "num_householder"),
    ),
    case(
        "sylvester-flip-str",
        layer("sylvester_triangular", flip="yes"),
        Raises(TypeError, "flip must be True or False"),
    ),
    case(
        "sylvester-init-scale-neg",
        layer("sylvester_orthogonal", init_scale=-0.1),
        Raises(ValueError, "init_scale"),
    ),
    case(
        "elementwise-init-nan",
        layer("elementwise_affine", init_log_scale=NAN),
        Raises(ValueError, "init_log_scale must be a finite number"),
    ),
    case(
        "triangular-init-inf",
        layer("triangular_affine", init_log_scale=INF),
        Raises(ValueError, "init_log_scale"),
    ),
    case(
        "permute-kind", layer("reverse", kind="shuffle"), Raises(ValueError, "kind must be one of")
    ),
    case("permute-seed-neg", layer("random_permutation", seed=-2), Raises(ValueError, "seed")),
    case(
        "squeeze-factor-0",
        layer("squeeze", factor=0),
        Raises(ValueError, "factor must be an int >= 1"),
    ),
    case("squeeze-factor-float", layer("squeeze", factor=2.0), Raises(TypeError, "factor")),
    case(
        "repeat-n-0",
        lambda tmp: Repeat(make_layer("reverse"), 0),
        Raises(ValueError, "n must be an int >= 1"),
    ),
    case(
        "repeat-n-float",
        lambda tmp: Repeat(make_layer("reverse"), 2.0),
        Raises(TypeError, "n must be an int"),
    ),
    case(
        "repeat-unroll-0",
        lambda tmp: Repeat(make_layer("reverse"), 2, unroll=0),
        Raises(ValueError, "unroll"),
    ),
    case(
        "repeat-not-layer",
        lambda tmp: Repeat("reverse", 2),
        Raises(TypeError, "Repeat needs a Layer"),
    ),
    case("chain-empty", lambda tmp: Chain(()), Raises(ValueError, "at least one layer")),
    case(
        "chain-not-layer",
        lambda tmp: Chain((make_layer("reverse"), "actnorm")),
        Raises(TypeError, "layers[1] must be a Layer"),
    ),
    case(
        "multiscale-empty",
        lambda tmp: MultiScale(levels=()),
        Raises(ValueError, "at least one level"),
    ),
    case(
        "multiscale-not-layer",
        lambda tmp: MultiScale(levels=((3,),)),
        Raises(TypeError, "levels[0][0] must be a Layer"),
    ),
    case(
        "planar-constraint",
        layer("planar", constraint="clip"),
        Raises(ValueError, "constraint must be one of"),
    ),
    case(
        "planar-margin", layer("planar", margin=0.0), Raises(ValueError, "margin must be in (0, 1)")
    ),
    case(
        "planar-init-scale-nan",
        layer("planar", init_scale=NAN),
        Raises(ValueError, "init_scale"),
    ),
]


# ==============================================================================================
# 2. Shapes and contexts at init / bind: clear errors, not flax's ScopeParamShapeError
# ==============================================================================================
@functools.cache
def cond_coupling():
    lay = make_layer("affine_coupling", hidden=(8,))
    return lay, lay.init(KEY, (4,), (3,)), lay.init(KEY, (4,))


@functools.cache
def cond_layers(name):
    lay = make_layer(name)
    return lay, lay.init(KEY, (4,), (3,))


X4 = np.ones((5, 4), np.float32)


def inverse(lay, params, context=None, x=X4):
    return lambda tmp: lay.bind(params, context).inverse(x)


INIT_BIND = [
    case(
        "coupling-rank-2",
        lambda tmp: make_layer("affine_coupling").init(KEY, (2, 3)),
        Raises(ValueError, "expects an event of rank 1 or 3"),
    ),
    case(
        "maf-image",
        lambda tmp: make_layer("maf").init(KEY, (4, 4, 2)),
        Raises(ValueError, "rank 1"),
    ),
    case(
        "event-zero",
        lambda tmp: make_layer("actnorm").init(KEY, (0,)),
        Raises(ValueError, "event_shape must be positive"),
    ),
    case(
        "init-context-on-unconditional",
        lambda tmp: make_layer("elementwise_affine").init(KEY, (2,), (3,)),
        Raises(ValueError, "unconditional"),
    ),
    case(
        "sylvester-ortho-above-dim",
        lambda tmp: make_layer("sylvester_orthogonal", num_ortho=5).init(KEY, (3,)),
        Raises(ValueError, "num_ortho must be in [1, 3]"),
    ),
    case(
        "squeeze-odd",
        lambda tmp: make_layer("squeeze").init(KEY, (3, 4, 1)),
        Raises(ValueError, "divisible by 2"),
    ),
    case(
        "channel-mask-one-channel",
        lambda tmp: make_layer("affine_coupling", mask="channel").init(KEY, (4, 4, 1)),
        Raises(ValueError, "C >= 2"),
    ),
    case(
        "checkerboard-on-vector",
        lambda tmp: make_layer("affine_coupling", mask="checkerboard").init(KEY, (4,)),
        Raises(ValueError, "does not apply to event"),
    ),
    case(
        "coupling-bind-without-context",
        lambda tmp: inverse(*cond_coupling()[:2])(tmp),
        Raises(ValueError, "needs one: pass context="),
    ),
    case(
        "coupling-bind-context-not-initialised",
        lambda tmp: inverse(cond_coupling()[0], cond_coupling()[2], np.ones((5, 3)))(tmp),
        Raises(ValueError, "initialised without a context"),
    ),
    case(
        "coupling-bind-wrong-context-size",
        lambda tmp: inverse(*cond_coupling()[:2], np.ones((5, 7)))(tmp),
        Raises(ValueError, "must have 3 features"),
    ),
    case(
        "coupling-bind-context-ok",
        lambda tmp: inverse(*cond_coupling()[:2], np.ones((5, 3)))(tmp),
        Ok(lambda y: np.allclose(y, X4)),
    ),
    case(
        "maf-bind-without-context",
        lambda tmp: inverse(*cond_layers("maf"))(tmp),
        Raises(ValueError, "needs a context"),
    ),
    case(
        "maf-bind-wrong-context-size",
        lambda tmp: inverse(*cond_layers("maf"), np.ones((5, 2)))(tmp),
        Raises(ValueError, "must have 3 values"),
    ),
    case(
        "iaf-bind-without-context",
        lambda tmp: inverse(*cond_layers("iaf"))(tmp),
        Raises(ValueError, "needs a context"),
    ),
    case(
        "actnorm-bind-without-context",
        lambda tmp: inverse(*cond_layers("actnorm"))(tmp),
        Raises(ValueError, "context is needed exactly when"),
    ),
    case(
        "actnorm-bind-wrong-context-size",
        lambda tmp: inverse(*cond_layers("actnorm"), np.ones((5, 6)))(tmp),
        Raises(ValueError, "must have 3 values"),
    ),
    case(
        "conv1x1-bind-without-context",
        lambda tmp: inverse(*cond_layers("conv1x1"))(tmp),
        Raises(ValueError, "context is needed exactly when"),
    ),
    case(
        "conv1x1-bind-wrong-context-size",
        lambda tmp: inverse(*cond_layers("conv1x1"), np.ones((5, 1)))(tmp),
        Raises(ValueError, "must have 3 values"),
    ),
    case(
        "actnorm-context-batch-mismatch",
        lambda tmp: inverse(*cond_layers("actnorm"), np.ones((2, 3)))(tmp),
        Raises(ValueError, "batch shape (5,)"),
    ),
]


# ==============================================================================================
# 3. Numerical edges of the layers: finite values or a clear error
# ==============================================================================================
def _scaled(params, factor):
    return jax.tree.map(lambda a: a * factor, params)


def round_trip(lay, params, x):
    """``(y, log_det, z, inverse log_det)`` of ``x`` through the bound layer, jitted once."""

    def f(params, x):
        bij = lay.bind(params)
        y, ld = bij.forward_and_log_det(x)
        z, ld_inv = bij.inverse_and_log_det(y)
        return y, ld, z, ld_inv

    return jax.jit(f)(params, x)


def coupling_extreme(name, factor=1e4, scale=1e3):
    lay = make_layer(name, hidden=(8,))
    params = lay.init(KEY, (4,))
    params["net"] = jax.tree.map(lambda a: jax.random.normal(KEY, a.shape) * factor, params["net"])
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32) * scale
    return (x, *round_trip(lay, params, x), lay)


def coupling_ok(out):
    x, y, ld, z, ld_inv, lay = out
    bound = 4 * lay.scale_bound  # |log det| <= D * scale_bound for affine
    return (
        finite((y, ld, z, ld_inv))
        and np.allclose(np.asarray(ld), -np.asarray(ld_inv), rtol=1e-3, atol=1e-2)
        and (lay.transform != "affine" or float(np.max(np.abs(ld))) <= bound + 1e-3)
    )


def radial_boundary(_tmp):
    lay = make_layer("radial")
    params = {"z0": jnp.array([0.3, -0.2]), "alpha": jnp.array(0.5), "beta": jnp.array(-60.0)}
    pts = jnp.array([[0.3, -0.2], [0.31, -0.2], [1.0, 2.0]])

    def f(params, pts):
        bij = lay.bind(params)
        return bij.forward_and_log_det(pts), bij.inverse_and_log_det(pts)

    return jax.jit(f)(params, pts)


def planar_edge(_tmp):
    w = jnp.array([1.0, 0.0])
    params = {"u": jnp.array([-1.0, 0.0]), "w": w, "b": jnp.array(0.0)}  # w.u = -1 exactly
    pts = jnp.array([[0.0, 0.0], [0.5, 1.0], [-3.0, 2.0]])
    return round_trip(make_layer("planar_project"), params, pts)


def sylvester_extreme(_tmp):
    lay = make_layer("sylvester_orthogonal", num_ortho=2)
    params = _scaled(lay.init(KEY, (3,)), 50.0)
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32) * 100
    return round_trip(lay, params, x)


def maf_extreme(_tmp):
    lay = make_layer("maf", hidden=(8,))
    params = lay.init(KEY, (3,))
    params = jax.tree.map(lambda a: jax.random.normal(KEY, a.shape) * 1e3, params)
    x = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32) * 1e3
    return jax.jit(lambda p, x: lay.bind(p).inverse_and_log_det(x))(params, x)


NUMERICS = [
    case(
        "affine-coupling-extreme", lambda tmp: coupling_extreme("affine_coupling"), Ok(coupling_ok)
    ),
    case(
        "additive-coupling-extreme",
        lambda tmp: coupling_extreme("additive_coupling"),
        Ok(coupling_ok),
    ),
    case(
        "spline-coupling-extreme",
        lambda tmp: coupling_extreme("spline_coupling", factor=1e3),
        Ok(coupling_ok),
    ),
    case(
        "spline-far-tails",
        lambda tmp: coupling_extreme("spline_coupling", factor=1.0, scale=1e6),
        Ok(coupling_ok),
    ),
    case("maf-extreme", maf_extreme, Ok(finite)),
    case("sylvester-extreme", sylvester_extreme, Ok(finite)),
    case("planar-w.u=-1", planar_edge, Ok(finite)),
    case(
        "radial-beta->-alpha",
        radial_boundary,
        Ok(finite),
    ),
]


# ==============================================================================================
# 4. Flow API: dtypes, shapes, sample counts, keys, temperatures, contexts
# ==============================================================================================
def lp(x, context=None):
    return lambda tmp: flow2()[0].log_prob(flow2()[1], x, context)


def clp(x, context=None):
    return lambda tmp: cond_flow()[0].log_prob(cond_flow()[1], x, context)


def draw(key=KEY, n=3, **kw):
    return lambda tmp: flow2()[0].sample(flow2()[1], key, n, **kw)


def same_as_float(x):
    return lambda out: np.allclose(out, flow2()[0].log_prob(flow2()[1], np.asarray(x, np.float32)))


INTS = np.array([[1, 2], [0, -1]])
BOOLS = np.array([[True, False], [False, False]])
POSITIVE_N = "n (the number of draws) must be a positive int"
KEY_MSG = "key must be a JAX PRNG key"
FLOW_API = [
    case("log_prob-int-data", lp(INTS), Ok(same_as_float(INTS))),
    case("log_prob-bool-data", lp(BOOLS), Ok(same_as_float(BOOLS))),
    case("log_prob-list-data", lp([[0.5, 1.0]]), Ok(same_as_float([[0.5, 1.0]]))),
    case(
        "log_prob-complex",
        lp(np.ones((2, 2), complex)),
        Raises(TypeError, "must hold real numbers"),
    ),
    case("log_prob-strings", lp(np.array([["a", "b"]])), Raises(TypeError, "got dtype <U1")),
    case(
        "log_prob-wrong-event",
        lp(np.ones((3, 3))),
        Raises(ValueError, "expected data of shape (..., 2)"),
    ),
    case("log_prob-scalar", lp(1.0), Raises(ValueError, "expected data of shape")),
    case("log_prob-ragged", lp([[1.0, 2.0], [3.0]]), Raises(TypeError, "real numbers")),
    case("sample-n-0", draw(n=0), Raises(ValueError, POSITIVE_N)),
    case("sample-n-neg", draw(n=-1), Raises(ValueError, POSITIVE_N)),
    case("sample-n-float", draw(n=1.5), Raises(ValueError, POSITIVE_N)),
    case("sample-n-bool", draw(n=True), Raises(ValueError, POSITIVE_N)),
    case("sample-n-str", draw(n="10"), Raises(ValueError, POSITIVE_N)),
    case("sample-n-numpy-int", draw(n=np.int64(3)), Ok(lambda x: x.shape == (3, 2))),
    case("sample-key-int", draw(key=0), Raises(TypeError, KEY_MSG)),
    case("sample-key-none", draw(key=None), Raises(TypeError, KEY_MSG)),
    case("sample-key-wrong-shape", draw(key=jnp.zeros(3, jnp.uint32)), Raises(TypeError, KEY_MSG)),
    case("sample-key-float", draw(key=jnp.zeros(2)), Raises(TypeError, KEY_MSG)),
    case("sample-typed-key", draw(key=jax.random.key(0)), Ok(lambda x: x.shape == (3, 2))),
    case(
        "temperature-neg",
        draw(temperature=-1.0),
        Raises(ValueError, "temperature must be a finite number >= 0"),
    ),
    case("temperature-nan", draw(temperature=NAN), Raises(ValueError, "temperature")),
    case("temperature-inf", draw(temperature=INF), Raises(ValueError, "temperature")),
    case(
        "temperature-0-is-base-mean-image",
        draw(temperature=0.0),
        Ok(
            lambda x: np.allclose(
                x, flow2()[0].bijector(flow2()[1]).forward(jnp.zeros((1, 2))), atol=1e-6
            )
        ),
    ),
    case(
        "context-on-unconditional", lp(DATA, np.ones((32, 3))), Raises(ValueError, "unconditional")
    ),
    case(
        "conditional-without-context",
        clp(DATA),
        Raises(ValueError, "this flow is conditional: pass a context"),
    ),
    case(
        "context-wrong-size",
        clp(DATA, np.ones((32, 4))),
        Raises(ValueError, "expected a context of shape (32, 3)"),
    ),
    case(
        "context-batch-mismatch",
        clp(DATA, np.ones((5, 3))),
        Raises(ValueError, "must equal the data's batch shape"),
    ),
    case(
        "context-complex", clp(DATA, np.ones((32, 3), complex)), Raises(TypeError, "real numbers")
    ),
    case(
        "context-shared", clp(DATA, np.ones(3)), Ok(lambda out: out.shape == (32,) and finite(out))
    ),
    case("flow-no-layers", lambda tmp: Flow((), (2,)), Raises(ValueError, "at least one layer")),
    case(
        "flow-layer-not-layer",
        lambda tmp: Flow(("planar",), (2,)),
        Raises(TypeError, "must be Layer instances"),
    ),
    case(
        "flow-event-int",
        lambda tmp: Flow((make_layer("reverse"),), 2),
        Raises(TypeError, "event_shape must be a tuple of ints"),
    ),
    case(
        "nll-wrong-event",
        lambda tmp: nll(flow2()[0], flow2()[1], np.ones((4, 3))),
        Raises(ValueError, "expected data of shape"),
    ),
]


# ==============================================================================================
# 5. Training: fit, fit_ml, fit_vi
# ==============================================================================================
def fit_with(data=DATA, **kw):
    def run(tmp):
        tr, state = transition()
        args = dict(steps=2, batch_size=8) | FIT | kw
        return fit(tr, state, data, **args)

    return run


def fit_ml_with(data=DATA, flow=None, **kw):
    def run(tmp):
        f = (flow or flow2)()[0]
        return fit_ml(f, data, **(dict(steps=2, batch_size=8) | FIT | kw))

    return run


def fit_vi_with(target=log_target, **kw):
    def run(tmp):
        return fit_vi(flow2()[0], target, **(dict(steps=2, num_samples=4) | FIT | kw))

    return run


def growing_loss():
    """A loss growing by 10 per step (2, 12, 22, ...; records average each chunk of 2)."""
    return Transition(lambda s: s, lambda s, batch, key: (s + 10.0, {"loss": s + 2.0}))


def exploding(hint: str = "try a smaller learning rate"):
    """A state multiplied by 10 per step whose loss turns NaN past 1e6, with ``hint``."""

    def step(s, batch, key):
        return s * 10.0, {"loss": jnp.where(s > 1e6, jnp.nan, s)}

    return Transition(lambda s: s, step, hint)


def trained_finite(out):
    params = out[0] if isinstance(out, tuple) else out.state
    return finite(params)


TRAINING = [
    case("fit-steps-neg", fit_with(steps=-1), Raises(ValueError, "steps must be >= 0, got -1")),
    case("fit-steps-float", fit_with(steps=1.5), Raises(TypeError, "steps must be an int")),
    case("fit-steps-0-returns-start", fit_with(steps=0), Ok(lambda r: r.step == 0)),
    case("fit-batch-size-0", fit_with(batch_size=0), Raises(ValueError, "batch_size must be >= 1")),
    case("fit-batch-size-float", fit_with(batch_size=8.0), Raises(TypeError, "batch_size")),
    case("fit-chunk-size-0", fit_with(chunk_size=0), Raises(ValueError, "chunk_size must be >= 1")),
    case(
        "fit-mode",
        fit_with(mode="fast"),
        Raises(ValueError, "mode must be one of ('scan', 'step', 'host')"),
    ),
    case(
        "fit-empty-data", fit_with(data=DATA[:0]), Raises(ValueError, "the training data is empty")
    ),
    case(
        "fit-complex-data",
        fit_with(data=DATA.astype(complex)),
        Raises(TypeError, "training data must be real"),
    ),
    case(
        "fit-string-data",
        fit_with(data=np.array([["a", "b"]] * 4)),
        Raises(TypeError, "must be numeric"),
    ),
    case("fit-key-int", fit_with(key=0), Raises(TypeError, KEY_MSG)),
    case(
        "fit-patience-without-eval",
        fit_with(patience=3),
        Raises(ValueError, "needs eval_fn and eval_every"),
    ),
    case(
        "fit-int-data-trains", fit_with(data=np.arange(64).reshape(32, 2) % 3), Ok(trained_finite)
    ),
    case(
        "fit-nan-data-diagnosed",
        fit_with(data=np.full((32, 2), np.nan)),
        Raises(DivergenceError, "not finite from the first step"),
    ),
    case(
        "fit_ml-nan-data",
        fit_ml_with(data=np.full((8, 2), np.nan)),
        Raises(ValueError, "non-finite values"),
    ),
    case(
        "fit_ml-inf-data",
        fit_ml_with(data=np.full((8, 2), np.inf)),
        Raises(ValueError, "non-finite values"),
    ),
    case("fit_ml-empty", fit_ml_with(data=DATA[:0]), Raises(ValueError, "empty")),
    case(
        "fit_ml-complex", fit_ml_with(data=DATA.astype(complex)), Raises(TypeError, "real numbers")
    ),
    case(
        "fit_ml-wrong-event",
        fit_ml_with(data=np.ones((8, 3))),
        Raises(ValueError, "expected data of shape (..., 2)"),
    ),
    case("fit_ml-key-int", fit_ml_with(key=0), Raises(TypeError, KEY_MSG)),
    case(
        "fit_ml-bool-data-trains",
        fit_ml_with(data=np.arange(64).reshape(32, 2) % 3 == 0),
        Ok(trained_finite),
    ),
    case(
        "fit_ml-context-missing",
        fit_ml_with(flow=cond_flow),
        Raises(ValueError, "this flow is conditional"),
    ),
    case(
        "fit_ml-context-nan",
        fit_ml_with(flow=cond_flow, context=np.full((32, 3), np.nan)),
        Raises(ValueError, "context contains 96 non-finite values"),
    ),
    case(
        "fit_ml-val-data-nan",
        fit_ml_with(val_data=np.full((4, 2), np.nan)),
        Raises(ValueError, "val_data contains"),
    ),
    case(
        "fit_ml-lr-nan",
        fit_ml_with(optimizer=optax.adam(NAN)),
        Raises(DivergenceError, "check that the learning rate is finite"),
    ),
    case(
        "fit_vi-num-samples-0",
        fit_vi_with(num_samples=0),
        Raises(ValueError, "num_samples must be >= 1"),
    ),
    case(
        "fit_vi-num-samples-float",
        fit_vi_with(num_samples=1.5),
        Raises(TypeError, "num_samples must be an int"),
    ),
    case(
        "fit_vi-target-vector",
        fit_vi_with(target=lambda x: x),
        Raises(ValueError, "must return a scalar per event"),
    ),
    case(
        "fit_vi-target-nan",
        fit_vi_with(target=lambda x: jnp.nan * x[0]),
        Raises(ValueError, "log_target is not finite"),
    ),
    case(
        "fit_vi-target-minus-inf",
        fit_vi_with(target=lambda x: -jnp.inf + 0 * x[0]),
        Raises(ValueError, "not finite"),
    ),
    case(
        "fit_vi-target-raises",
        fit_vi_with(target=lambda x: jnp.dot(x, jnp.ones(5))),
        Raises(ValueError, "log_target failed"),
    ),
    case("fit_vi-key-int", fit_vi_with(key=1), Raises(TypeError, KEY_MSG)),
    case(
        "fit_vi-lr-too-large-diverges",
        fit_vi_with(steps=40, optimizer=optax.sgd(3.0), num_samples=4, chunk_size=2),
        Raises(DivergenceError, "the loss grew before it diverged: try a smaller learning rate"),
    ),
    case(
        "fit-diverging-says-what-this-algorithm-can-try",
        lambda tmp: fit(exploding("lower rho_reg"), 1.0, None, steps=12, chunk_size=2, **FIT),
        Raises(DivergenceError, "the loss grew before it diverged: lower rho_reg"),
    ),
    case(
        "fit-loss-ends-far-above-start-warns",
        lambda tmp: fit(growing_loss(), 0.0, None, steps=6, chunk_size=2, **FIT),
        Warns(RuntimeWarning, "the loss ended at 47, far above where it started (7)"),
    ),
]


# ==============================================================================================
# 6. Objectives
# ==============================================================================================
OBJECTIVES = [
    case(
        "bits_per_dim-0-dims",
        lambda tmp: bits_per_dim(jnp.ones(3), 0),
        Raises(ValueError, "num_dims"),
    ),
    case(
        "bits_per_dim-0-bins",
        lambda tmp: bits_per_dim(jnp.ones(3), 2, 0),
        Raises(ValueError, "num_bins"),
    ),
    case(
        "bits_per_dim-closed-form",
        lambda tmp: bits_per_dim(jnp.array([-np.log(2.0) * 4]), 2, None),
        Ok(lambda v: np.allclose(v, 2.0)),
    ),
    case(
        "importance_log_evidence-0-samples",
        lambda tmp: importance_log_evidence(flow2()[0], flow2()[1], KEY, log_target, 0),
        Raises(ValueError, "num_samples"),
    ),
    case(
        "importance_log_evidence-identity-flow",
        # the initial RealNVP is the identity: q = N(0, I) = the normalised target, log Z = 0
        lambda tmp: importance_log_evidence(
            flow2()[0], flow2()[1], KEY, lambda x: log_target(x) - np.log(2 * np.pi), 64
        ),
        Ok(lambda v: abs(float(v)) < 1e-4),
    ),
]


# ==============================================================================================
# 7. Experiment settings (--set values beyond their type)
# ==============================================================================================
def setting(exp, key, value):
    return lambda tmp: experiments.get(exp).config("smoke", {key: value})


SETTINGS = [
    case(
        "steps-0",
        setting("density-matching", "steps", "0"),
        Raises(ValueError, "setting 'steps' must be an int >= 1, got 0"),
    ),
    case(
        "steps-neg",
        setting("density-matching", "steps", "-5"),
        Raises(ValueError, "'steps' must be an int >= 1"),
    ),
    case(
        "steps-float",
        setting("density-matching", "steps", "1.5"),
        Raises(ValueError, "expects a int"),
    ),
    case(
        "steps-word",
        setting("density-matching", "steps", "many"),
        Raises(ValueError, "'steps' expects a int"),
    ),
    case(
        "batch-size-0",
        setting("density-matching", "batch_size", "0"),
        Raises(ValueError, "'batch_size' must be an int >= 1"),
    ),
    case(
        "epochs-0",
        setting("dapper-synthetic", "epochs", "0"),
        Raises(ValueError, "'epochs' must be an int >= 1"),
    ),
    case(
        "vi-batch-size-0",
        setting("vi-planar-ring", "batch_size", "0"),
        Raises(ValueError, "'batch_size'"),
    ),
    case(
        "num-topics-0",
        setting("dapper-synthetic", "num_topics", "0"),
        Raises(ValueError, "'num_topics' must be an int >= 1"),
    ),
    case(
        "num-personas-neg",
        setting("dapper-synthetic", "num_personas", "-2"),
        Raises(ValueError, "'num_personas'"),
    ),
    case(
        "n-train-0",
        setting("density-estimation-2d", "n_train", "0"),
        Raises(ValueError, "'n_train' must be an int >= 1"),
    ),
    case("grid-n-0", setting("density-matching", "grid_n", "0"), Raises(ValueError, "'grid_n'")),
    case("layers-0", setting("density-matching", "layers", "0"), Raises(ValueError, "'layers'")),
    case(
        "eval-samples-0",
        setting("density-matching", "eval_samples", "0"),
        Raises(ValueError, "'eval_samples'"),
    ),
    case(
        "hidden-has-0",
        setting("density-matching", "hidden", "[64, 0]"),
        Raises(ValueError, "'hidden' must be an int >= 1, got 0"),
    ),
    case(
        "hidden-neg-scalar",
        setting("density-matching", "hidden", "-4"),
        Raises(ValueError, "'hidden'"),
    ),
    case(
        "depths-neg",
        setting("density-estimation-2d", "depths", "[1, -1]"),
        Raises(ValueError, "'depths' must be an int >= 0"),
    ),
    case(
        "seed-neg",
        setting("density-matching", "seed", "-1"),
        Raises(ValueError, "'seed' must be an int >= 0"),
    ),
    case("seeds-neg", setting("vi-planar-ring", "seeds", "[0, -3]"), Raises(ValueError, "'seeds'")),
    case(
        "lr-0",
        setting("density-matching", "lr", "0"),
        Raises(ValueError, "setting 'lr' must be a finite number > 0, got 0.0"),
    ),
    case(
        "lr-neg",
        setting("density-matching", "lr", "-0.01"),
        Raises(ValueError, "'lr' must be a finite number > 0"),
    ),
    case(
        "lr-nan",
        setting("density-matching", "lr", "NaN"),
        Raises(ValueError, "'lr' must be a finite number, got nan"),
    ),
    case(
        "lr-inf",
        setting("density-matching", "lr", "Infinity"),
        Raises(ValueError, "'lr' must be a finite number"),
    ),
    case(
        "lr-overflow",
        setting("density-matching", "lr", "1e999"),
        Raises(ValueError, "'lr' must be a finite number"),
    ),
    case(
        "lr-word",
        setting("density-matching", "lr", "fast"),
        Raises(ValueError, "'lr' expects a float"),
    ),
    case(
        "kappa-0",
        setting("dapper-news", "kappa", "0"),
        Raises(ValueError, "'kappa' must be a number in (0.5, 1]"),
    ),
    case(
        "dropout-1",
        setting("psr-student-teacher", "dropout_rate", "1"),
        Raises(ValueError, "'dropout_rate' must be a number in [0, 1)"),
    ),
    case(
        "temperature-neg",
        setting("psr-student-teacher", "temperature", "-0.5"),
        Raises(ValueError, "'temperature' must be a finite number >= 0"),
    ),
    case(
        "temperatures-nan",
        setting("psr-images", "temperatures", "[0.5, NaN]"),
        Raises(ValueError, "'temperatures' must be a finite number"),
    ),
    case(
        "regularization-neg",
        setting("gbnf-density-matching", "regularization", "-1"),
        Raises(ValueError, "'regularization'"),
    ),
    case(
        "obs-noise-0",
        setting("dapper-news", "obs_noise", "0"),
        Raises(ValueError, "'obs_noise' must be a finite number > 0"),
    ),
    case(
        "time-budget-neg",
        setting("dapper-news", "time_budget", "-1"),
        Raises(ValueError, "'time_budget'"),
    ),
    case(
        "bool-as-int",
        setting("dapper-news", "gensim", "1"),
        Raises(ValueError, "expects true or false"),
    ),
    case(
        "unknown-key", setting("density-matching", "step", "10"), Raises(KeyError, "valid settings")
    ),
    case(
        "n_test-0-means-all",
        setting("density-estimation-2d", "n_test", "0"),
        Ok(lambda c: c.n_test == 0),
    ),
    case(
        "max_docs-0-means-all",
        setting("dapper-news", "max_docs", "0"),
        Ok(lambda c: c.max_docs == 0),
    ),
    case(
        "lr-int-to-float",
        setting("density-matching", "lr", "1"),
        Ok(lambda c: c.lr == 1.0 and isinstance(c.lr, float)),
    ),
    case(
        "temperature-0-ok",
        setting("psr-student-teacher", "temperature", "0"),
        Ok(lambda c: c.temperature == 0.0),
    ),
    case(
        "hidden-scalar-to-tuple",
        setting("density-matching", "hidden", "32"),
        Ok(lambda c: c.hidden == (32,)),
    ),
    case(
        "seeds-list-becomes-tuple",
        setting("vi-planar-ring", "seeds", "[0, 1]"),
        Ok(lambda c: c.seeds == (0, 1)),
    ),
]


SETTINGS += [
    case("kappa-0.5", setting("dapper-news", "kappa", "0.5"), Raises(ValueError, "(0.5, 1]")),
    case("kappa-1-ok", setting("dapper-news", "kappa", "1"), Ok(lambda c: c.kappa == 1.0)),
    case("tau0-0-ok", setting("dapper-news", "tau0", "0"), Ok(lambda c: c.tau0 == 0.0)),
    case("tau0-neg", setting("dapper-news", "tau0", "-1"), Raises(ValueError, "'tau0' must be")),
    case(
        "minibatch-rho-negative",
        setting("dapper-news", "minibatch_rho", "-0.1"),
        Raises(ValueError, "'minibatch_rho' must be a finite number >= 0"),
    ),
    case(
        "rho-regs-negative",
        setting("dapper-news", "rho_regs", "[0.0, -0.2]"),
        Raises(ValueError, "'rho_regs' must be a finite number >= 0"),
    ),
    case(
        # the thesis's [0, 0.5] is advice, not a limit: the M-step keeps any rho stable
        "rho-reg-above-half-ok",
        setting("dapper-synthetic", "rho_reg", "0.6"),
        Ok(lambda c: c.rho_reg == 0.6),
    ),
    case(
        "block-words-0",
        setting("dapper-sotu", "block_words", "0"),
        Raises(ValueError, "'block_words'"),
    ),
]


def test_every_profile_passes_its_own_setting_checks():
    """The rules must not reject the shipped profiles (so they are not too strict)."""
    for name in experiments.names():
        for cfg in experiments.get(name).profiles.values():
            for key, value in dataclasses.asdict(cfg).items():
                experiments.check_setting(key, value)  # raises on a rule that is too strict


# ==============================================================================================
# 8. The command line: one line on stderr, a non-zero exit, nothing trained
# ==============================================================================================
def argv(*args, out=True):
    return lambda tmp: list(args) + (["--out", str(tmp / "run")] if out else [])


CLI = [
    case(
        "cli-unknown-experiment",
        argv("run", "no-such-experiment"),
        Cli(2, "unknown experiment 'no-such-experiment'"),
    ),
    case(
        "cli-unknown-setting",
        argv("run", "density-matching", "--set", "stepz=10"),
        Cli(2, "unknown setting 'stepz'"),
    ),
    case(
        "cli-set-without-equals",
        argv("run", "density-matching", "--set", "steps"),
        Cli(2, "--set expects key=value"),
    ),
    case(
        "cli-steps-0",
        argv("run", "density-matching", "--set", "steps=0"),
        Cli(2, "setting 'steps' must be an int >= 1, got 0"),
    ),
    case(
        "cli-steps-float",
        argv("run", "density-matching", "--set", "steps=2.5"),
        Cli(2, "'steps' expects a int"),
    ),
    case(
        "cli-batch-size-0",
        argv("run", "density-matching", "--set", "batch_size=0"),
        Cli(2, "'batch_size' must be an int >= 1"),
    ),
    case(
        "cli-lr-nan",
        argv("run", "density-matching", "--set", "lr=NaN"),
        Cli(2, "'lr' must be a finite number"),
    ),
    case(
        "cli-lr-0",
        argv("run", "vi-planar-ring", "--set", "lr=0"),
        Cli(2, "'lr' must be a finite number > 0"),
    ),
    case(
        "cli-lr-word",
        argv("run", "vi-planar-ring", "--set", "lr=big"),
        Cli(2, "'lr' expects a float"),
    ),
    case(
        "cli-epochs-0",
        argv("run", "dapper-synthetic", "--set", "epochs=0"),
        Cli(2, "'epochs' must be an int >= 1"),
    ),
    case(
        "cli-hidden-0",
        argv("run", "density-matching", "--set", "hidden=[0]"),
        Cli(2, "'hidden' must be an int >= 1"),
    ),
    case(
        "cli-seeds-neg",
        argv("run", "vi-planar-ring", "--set", "seeds=[-1]"),
        Cli(2, "'seeds' must be an int >= 0"),
    ),
    case(
        "cli-kappa-2",
        argv("run", "dapper-news", "--set", "kappa=2"),
        Cli(2, "'kappa' must be a number in (0.5, 1]"),
    ),
    case(
        "cli-resume-missing",
        argv("run", "density-matching", "--resume"),
        Cli(2, "there is nothing to resume"),
    ),
    case(
        "cli-bool-setting",
        argv("run", "dapper-news", "--set", "gensim=maybe"),
        Cli(2, "expects true or false"),
    ),
]


# ==============================================================================================
# 9. The .dap reader and the corpus builder
# ==============================================================================================
GOOD_DAP = "2\n0.0\n2\nann 2 0:3 2:1\nbob 1 1:2\n7.0\n1\nann 1 2:4\n"


def dap(text, **kw):
    def run(tmp):
        path = tmp / "corpus.dap"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return read_dap(str(path), **kw)

    return run


def dap_line(line_no, field):
    return lambda msg: f"line {line_no}" in msg and field in msg


def dap_doc(doc_line, t1="7.0"):
    """The good file with its third document line replaced by ``doc_line``."""
    return f"2\n0.0\n2\nann 2 0:3 2:1\nbob 1 1:2\n{t1}\n1\n{doc_line}\n"


def good_corpus(c):
    return (
        c.num_docs == 3
        and c.vocab_size == 3
        and list(c.doc(0)[0]) == [0, 2]
        and list(c.doc(0)[1]) == [3.0, 1.0]
        and list(c.time_values) == [0.0, 7.0]
        and list(c.author_names) == ["ann", "bob"]
    )


def vocab_file(tmp):
    path = tmp / "vocab.txt"
    path.write_text("alpha\nbeta\ngamma\n")
    return str(path)


DAP = [
    case("dap-good", dap(GOOD_DAP), Ok(good_corpus)),
    case(
        "dap-good-with-vocab-list",
        dap(GOOD_DAP, vocab=["a", "b", "c"]),
        Ok(lambda c: c.vocab == ("a", "b", "c")),
    ),
    case(
        "dap-good-with-vocab-file",
        lambda tmp: dap(GOOD_DAP, vocab=vocab_file(tmp))(tmp),
        Ok(lambda c: c.vocab == ("alpha", "beta", "gamma")),
    ),
    case("dap-blank-lines-ignored", dap(GOOD_DAP.replace("\n", "\n\n")), Ok(good_corpus)),
    case("dap-empty-file", dap(""), Raises(ValueError, "empty .dap file")),
    case(
        "dap-missing-file",
        lambda tmp: read_dap(str(tmp / "nope.dap")),
        Raises(FileNotFoundError, "no such .dap file"),
    ),
    case(
        "dap-binary-file",
        dap(b"\xff\xfe\x00\x01garbage"),
        Raises(ValueError, "not a text .dap file"),
    ),
    case(
        "dap-T-word",
        dap("two\n" + GOOD_DAP[2:]),
        Raises(ValueError, "line 1: T (the number of time steps, line 1) must be an int >= 1"),
    ),
    case("dap-T-0", dap("0\n"), Raises(ValueError, "must be an int >= 1, got '0'")),
    case(
        "dap-T-too-large",
        dap("3" + GOOD_DAP[1:]),
        Raises(ValueError, "unexpected end of file while reading the timestamp of time step 2"),
    ),
    case(
        "dap-timestamp-nan",
        dap(GOOD_DAP.replace("7.0", "nan")),
        Raises(ValueError, "line 6: timestamp must be a finite number, got 'nan'"),
    ),
    case(
        "dap-timestamp-inf",
        dap(GOOD_DAP.replace("7.0", "inf")),
        Raises(ValueError, "timestamp must be a finite number"),
    ),
    case(
        "dap-timestamp-word",
        dap(GOOD_DAP.replace("7.0", "tuesday")),
        Raises(ValueError, "line 6: timestamp"),
    ),
    case(
        "dap-timestamp-decreasing",
        dap(GOOD_DAP.replace("7.0", "-1.0")),
        Raises(ValueError, "timestamp must be greater than the previous one"),
    ),
    case(
        "dap-timestamp-equal",
        dap(GOOD_DAP.replace("7.0", "0.0")),
        Raises(ValueError, "line 6: timestamp must be greater"),
    ),
    case(
        "dap-N_t-neg",
        dap(GOOD_DAP.replace("\n1\nann", "\n-1\nann")),
        Raises(ValueError, "line 7: N_t of time step 1 must be an int >= 0"),
    ),
    case(
        "dap-N_t-word",
        dap(GOOD_DAP.replace("\n2\nann", "\ntwo\nann")),
        Raises(ValueError, "line 3: N_t of time step 0"),
    ),
    case(
        "dap-N_t-too-large",
        dap(GOOD_DAP.replace("\n1\nann", "\n2\nann")),
        Raises(ValueError, "unexpected end of file while reading a document line of time step 1"),
    ),
    case(
        "dap-truncated-doc-line",
        dap(dap_doc("ann")),
        Raises(ValueError, "line 8: a document line must be"),
    ),
    case(
        "dap-num-terms-word",
        dap(dap_doc("ann x 2:4")),
        Raises(ValueError, "line 8: num_terms must be an int >= 0, got 'x'"),
    ),
    case(
        "dap-num-terms-mismatch",
        dap(dap_doc("ann 2 2:4")),
        Raises(ValueError, "line 8: num_terms says 2 terms but the line lists 1"),
    ),
    case(
        "dap-pair-without-colon",
        dap(dap_doc("ann 1 24")),
        Raises(ValueError, "line 8: a term must be 'word_id:count', got '24'"),
    ),
    case(
        "dap-word-id-neg",
        dap(dap_doc("ann 1 -2:4")),
        Raises(ValueError, "line 8: word id must be an int >= 0"),
    ),
    case(
        "dap-word-id-word",
        dap(dap_doc("ann 1 cat:4")),
        Raises(ValueError, "word id must be an int"),
    ),
    case(
        "dap-word-id-float",
        dap(dap_doc("ann 1 2.5:4")),
        Raises(ValueError, "word id must be an int"),
    ),
    case(
        "dap-word-id-1e9-no-vocab",
        dap(dap_doc("ann 1 1000000000:4")),
        Raises(ValueError, "below max_vocab=1000000 (pass vocab="),
    ),
    case(
        "dap-word-id-above-max-vocab",
        dap(GOOD_DAP, max_vocab=2),
        Raises(ValueError, "word id must be below max_vocab=2"),
    ),
    case(
        "dap-word-id-above-vocab",
        dap(GOOD_DAP, vocab=["a", "b"]),
        Raises(ValueError, "line 4: word id must be below the vocabulary size 2, got 2"),
    ),
    case(
        "dap-max-vocab-0",
        dap(GOOD_DAP, max_vocab=0),
        Raises(ValueError, "max_vocab must be an int >= 1"),
    ),
    case(
        "dap-count-0",
        dap(dap_doc("ann 1 2:0")),
        Raises(ValueError, "line 8: the count of word 2 must be > 0, got '0'"),
    ),
    case(
        "dap-count-neg",
        dap(dap_doc("ann 1 2:-3")),
        Raises(ValueError, "the count of word 2 must be > 0"),
    ),
    case(
        "dap-count-inf",
        dap(dap_doc("ann 1 2:inf")),
        Raises(ValueError, "the count of word 2 must be a finite number"),
    ),
    case(
        "dap-count-nan",
        dap(dap_doc("ann 1 2:nan")),
        Raises(ValueError, "the count of word 2 must be a finite number"),
    ),
    case(
        "dap-count-empty",
        dap(dap_doc("ann 1 2:")),
        Raises(ValueError, "the count of word 2 must be a finite number, got ''"),
    ),
    case(
        "dap-count-fraction",
        dap(dap_doc("ann 1 2:1.5")),
        Raises(ValueError, "must be an integer (allow_fractions=True"),
    ),
    case(
        "dap-count-fraction-allowed",
        dap(dap_doc("ann 1 2:1.5"), allow_fractions=True),
        Ok(lambda c: np.allclose(c.doc(2)[1], [1.5])),
    ),
    case(
        "dap-count-1e0-is-integer",
        dap(dap_doc("ann 1 2:4.0")),
        Ok(lambda c: np.allclose(c.doc(2)[1], [4.0])),
    ),
    case(
        "dap-duplicate-word-summed",
        dap(dap_doc("ann 2 2:4 2:1")),
        Ok(lambda c: list(c.doc(2)[1]) == [5.0]),
    ),
    case(
        "dap-trailing-lines",
        dap(GOOD_DAP + "carl 1 0:1\n"),
        Raises(ValueError, "line 9: 1 trailing line(s) after the last of the T=2 time steps"),
    ),
    case(
        "dap-no-documents",
        dap("1\n0.0\n0\n"),
        Raises(ValueError, "empty corpus (no document lines)"),
    ),
]


def corpus(texts, **kw):
    authors = ["a", "b", "a", "b"][: len(texts)]
    dates = ["2020-01-01", "2020-01-08", "2020-01-15", "2020-01-22"][: len(texts)]
    return lambda tmp: build_corpus(authors, dates, texts, **kw)


LONG = "river mountain forest valley river ocean forest desert river mountain"
CORPUS = [
    case(
        "build_corpus-reports-dropped",
        corpus([LONG, "river", LONG, "ocean desert"], min_words=3),
        Warns(UserWarning, "min_words=3 dropped 2 of 4 documents"),
    ),
    case(
        "build_corpus-keeps-all", corpus([LONG, LONG], min_words=3), Ok(lambda c: c.num_docs == 2)
    ),
    case(
        "build_corpus-vocab-size-0",
        corpus([LONG], vocab_size=0),
        Raises(ValueError, "vocab_size must be an int >= 1, got 0"),
    ),
    case(
        "build_corpus-min-words-neg",
        corpus([LONG], min_words=-1),
        Raises(ValueError, "min_words must be an int >= 0"),
    ),
    case(
        "build_corpus-min-words-float",
        corpus([LONG], min_words=2.5),
        Raises(ValueError, "min_words must be an int"),
    ),
    case(
        "build_corpus-time-unit-0",
        corpus([LONG], time_unit_days=0),
        Raises(ValueError, "time_unit_days must be a finite number > 0"),
    ),
    case(
        "build_corpus-time-unit-nan",
        corpus([LONG], time_unit_days=NAN),
        Raises(ValueError, "time_unit_days"),
    ),
    case(
        "build_corpus-all-dropped",
        corpus(["river", "ocean"], min_words=3),
        Raises(ValueError, "no document has at least min_words=3"),
    ),
    case(
        "build_corpus-lengths",
        lambda tmp: build_corpus(["a"], ["2020-01-01", "2020-01-02"], [LONG]),
        Raises(ValueError, "equal lengths"),
    ),
    case(
        "build_corpus-relative-to",
        corpus([LONG], relative_to="world"),
        Raises(ValueError, "relative_to must be"),
    ),
]


# ==============================================================================================
# 10. Checkpoints: a corrupt, truncated or zero-filled newest one falls back; none -> one line
# ==============================================================================================
def _saved(tmp, steps=(1, 2, 3)):
    ck = Checkpointer(str(tmp / "ck"), keep=5)
    for s in steps:
        ck.save(s, {"w": np.full(3, float(s), np.float32)})
    return ck


def _damage(path, how):
    for root, _, files in os.walk(path):
        for name in files:
            f = os.path.join(root, name)
            size = os.path.getsize(f)
            if how == "truncate":
                with open(f, "r+b") as fh:
                    fh.truncate(size // 2)
            elif how == "zero":
                with open(f, "r+b") as fh:
                    fh.write(b"\0" * size)
            else:
                with open(f, "wb") as fh:
                    fh.write(b"not a checkpoint " * 4)


def damaged_restore(how, which=(3,)):
    def run(tmp):
        ck = _saved(tmp)
        for s in which:
            _damage(ck.path(s), how)
        ck = Checkpointer(str(tmp / "ck"), keep=5)
        try:
            return ck.restore({"w": np.zeros(3, np.float32)})
        finally:
            ck.close()

    return run


def restored_step(step):
    return lambda out: out[0] == step and np.allclose(out[1]["w"], float(step))


CHECKPOINTS = [
    case("checkpoint-intact", damaged_restore("corrupt", which=()), Ok(restored_step(3))),
    case("checkpoint-corrupt-newest", damaged_restore("corrupt"), Ok(restored_step(2))),
    case("checkpoint-truncated-newest", damaged_restore("truncate"), Ok(restored_step(2))),
    case("checkpoint-zero-filled-newest", damaged_restore("zero"), Ok(restored_step(2))),
    case(
        "checkpoint-two-newest-corrupt",
        damaged_restore("corrupt", which=(3, 2)),
        Ok(restored_step(1)),
    ),
    case(
        "checkpoint-fallback-warns",
        damaged_restore("zero"),
        Warns(UserWarning, "trying the next older one"),
    ),
    case(
        "checkpoint-none-readable",
        damaged_restore("corrupt", which=(1, 2, 3)),
        Raises(CheckpointError, "none of the checkpoints in"),
    ),
]


# ==============================================================================================
# 11. Model entry points (flow families, GBNF, DAPPER configuration)
# ==============================================================================================
def family(name, dim=2, **kw):
    from flowjax_thesis.families import make_flow

    return lambda tmp: make_flow(name, dim, **kw)


def gbnf(flow=None, num_components=2, **kw):
    from flowjax_thesis.models.gbnf.model import GBNF

    return lambda tmp: GBNF(flow or flow2()[0], num_components, **kw)


def dap_config(**kw):
    from flowjax_thesis.models.dap.state import DapConfig

    return lambda tmp: DapConfig(**(dict(num_topics=5, num_personas=3) | kw))


MODELS = [
    case(
        "make_flow-unknown",
        family("realnvpp"),
        Raises(ValueError, "unknown flow family 'realnvpp'"),
    ),
    case(
        "make_flow-num-layers-0",
        family("realnvp", num_layers=0),
        Raises(ValueError, "num_layers must be"),
    ),
    case("make_flow-dim-0", family("realnvp", dim=0), Raises(ValueError, "dim must be a positive")),
    case("make_flow-coupling-dim-1", family("realnvp", dim=1), Raises(ValueError, "dim >= 2")),
    case("make_flow-maf-hidden-empty", family("maf", dim=3, hidden=()), Raises(ValueError, HIDDEN)),
    case("make_flow-hidden-zero", family("realnvp", hidden=(0,)), Raises(ValueError, HIDDEN)),
    case(
        "make_flow-hidden-int",
        family("realnvp", hidden=64),
        Raises(TypeError, "hidden"),
    ),
    case("gbnf-0-components", gbnf(num_components=0), Raises(ValueError, "at least one component")),
    case(
        "gbnf-float-components",
        gbnf(num_components=1.5),
        Raises(TypeError, "num_components must be an integer"),
    ),
    case("gbnf-boosting", gbnf(boosting="mult"), Raises(ValueError, "boosting must be one of")),
    case(
        "gbnf-not-a-flow",
        lambda tmp: gbnf(flow="realnvp")(tmp),
        Raises(TypeError, "flow must be a Flow"),
    ),
    case(
        "dapper-topics-0",
        dap_config(num_topics=0),
        Raises(ValueError, "num_topics and num_personas must be positive"),
    ),
    case(
        "dapper-kappa",
        dap_config(kappa=0.3),
        Raises(ValueError, "kappa (forgetting rate) must lie in (0.5, 1]"),
    ),
    case(
        "dapper-rho-reg",
        dap_config(rho_reg=-0.1),
        Raises(ValueError, "rho_reg: expected a finite number >= 0, got -0.1"),
    ),
    case(
        "dapper-damping-0",
        dap_config(damping=0.0),
        Raises(ValueError, "damping must lie in (0, 1]"),
    ),
    case(
        "dapper-process-noise-neg",
        dap_config(process_noise=-1.0),
        Raises(ValueError, "process_noise must be positive"),
    ),
    case(
        "dapper-obs-noise-nan",
        dap_config(obs_noise=NAN),
        Raises(ValueError, "obs_noise"),
    ),
]


ALL = (
    LAYER_OPTIONS
    + INIT_BIND
    + NUMERICS
    + FLOW_API
    + TRAINING
    + OBJECTIVES
    + SETTINGS
    + CLI
    + DAP
    + CORPUS
    + CHECKPOINTS
    + MODELS
)


@pytest.mark.parametrize(("thunk", "expect"), ALL)
def test_bad_input(thunk, expect, tmp_path):
    check_case(thunk, expect, tmp_path)


def test_the_table_is_large_and_mixed():
    kinds = [type(p.values[1]).__name__ for p in ALL]
    assert len(ALL) >= 150
    assert {"Raises", "Ok", "Warns", "Cli"} <= set(kinds)
