"""A flow: a base distribution pushed through a stack of layers -- the one distribution object.

``forward`` maps base -> data (sampling), ``inverse`` maps data -> base (density). Layers are
listed as in ``distrax.Chain``: the first is nearest the data. Repeated identical layers go in a
:class:`~flowjax_thesis.bijectors.Repeat` (stacked params, ``lax.scan``).

Everything is a pure function of a params pytree::

    flow = Flow((Repeat(Planar(), 32),), event_shape=(2,))
    params = flow.init(jax.random.PRNGKey(0))
    x, log_q = flow.sample_and_log_prob(params, key, 128)
    flow.log_prob(params, x)                       # = log_q
    flow.distribution(params)                      # a distrax.Transformed

The base is an argument: the standard normal (default), any ``distrax.Distribution``, or a
function of the context returning one -- e.g. a VAE posterior's per-example Gaussian::

    posterior = Flow((Repeat(make_layer("iaf", hidden=(256,)), 8),), (64,),
                     context_shape={"mu": (64,), "log_var": (64,), "h": (256,)},
                     base=lambda c: distrax.MultivariateNormalDiag(
                         c["mu"], jnp.exp(0.5 * c["log_var"])),
                     layer_context=lambda c: c["h"])
    z, log_q = posterior.sample_and_log_prob(params, key, n, context=enc)

Contexts are arrays or pytrees of arrays (``context_shape`` is then a pytree of shapes, one per
leaf, for one example). A context leaf has shape ``B + leaf_shape``; ``B`` may be ``()`` (one
context shared by every draw or data point) and is broadcast over leading sample axes: draws have
shape ``(n,) + B + event_shape`` (``B + event_shape`` when ``n`` is None, i.e. one draw per
context), and ``log_prob`` accepts data whose batch shape ends with ``B``.

Temperature (one convention everywhere): at temperature ``T >= 0`` the base draw is scaled
about the base's mean, ``z_T = mean + T (z - mean)`` (``N(mean, T^2 Sigma)`` for a Gaussian base),
and the log-density returned is that of the tempered flow. At ``T = 0`` the draws are the image
of the base mean and the log-density is ``+inf`` (a point mass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.bijectors import Chain, Layer, Repeat, make_layer


def _is_shape(s) -> bool:
    return isinstance(s, (tuple, list)) and all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in s
    )


def _shape_leaves(shape_tree) -> tuple[list[tuple[int, ...]], Any]:
    leaves, treedef = jax.tree.flatten(shape_tree, is_leaf=_is_shape)
    return [tuple(int(i) for i in s) for s in leaves], treedef


def check_key(key, name: str = "key") -> jax.Array:
    """A clear error unless ``key`` is a JAX PRNG key (``jax.random.PRNGKey(seed)`` or
    ``jax.random.key(seed)``)."""
    if isinstance(key, jax.Array) or isinstance(key, np.ndarray):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        if key.dtype == np.uint32 and key.shape[-1:] == (2,):
            return key
    raise TypeError(
        f"{name} must be a JAX PRNG key such as jax.random.PRNGKey(0), got "
        f"{type(key).__name__} {getattr(key, 'shape', key)!r}"
    )


def as_float_array(x, name: str = "x"):
    """``x`` as a floating JAX array: integers and booleans are cast to float32; complex numbers,
    strings and objects are rejected with a message."""
    if isinstance(x, jax.core.Tracer):
        arr = x
    else:
        try:
            arr = np.asarray(x) if not isinstance(x, jax.Array) else x
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an array of real numbers: {err}") from None
    dtype = arr.dtype
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.asarray(arr)
    if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
        return jnp.asarray(arr, jnp.float32)
    raise TypeError(f"{name} must hold real numbers (float, int or bool), got dtype {dtype}")


@dataclass(frozen=True)
class Flow:
    """``base`` pushed through ``layers`` (see the module docstring).

    Attributes:
      layers: the layers, nearest the data first.
      event_shape: the data's event shape.
      context_shape: shape of one example's context (or a pytree of shapes), None if unconditional.
      base: None (standard normal), a ``distrax.Distribution`` or ``context -> Distribution``.
      layer_context: ``context -> what conditional layers receive`` (default: the whole context;
        a function returning None keeps the layers unconditional, e.g. when only the base uses
        the context).
    """

    layers: tuple[Layer, ...]
    event_shape: tuple[int, ...]
    context_shape: Any = None
    base: distrax.Distribution | Callable[[Any], distrax.Distribution] | None = None
    layer_context: Callable[[Any], Any] | None = None

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers:
            raise ValueError("a Flow needs at least one layer")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Flow layers must be Layer instances, got {layer!r}")
        object.__setattr__(self, "layers", layers)
        if not _is_shape(self.event_shape):
            raise TypeError(f"event_shape must be a tuple of ints, got {self.event_shape!r}")
        object.__setattr__(self, "event_shape", tuple(int(s) for s in self.event_shape))
        if self.context_shape is not None:
            leaves, treedef = _shape_leaves(self.context_shape)
            if not leaves or not all(
                _is_shape(s) for s in jax.tree.leaves(self.context_shape, is_leaf=_is_shape)
            ):
                raise TypeError(
                    "context_shape must be a shape (tuple of ints) or a pytree of shapes, got "
                    f"{self.context_shape!r}"
                )
            object.__setattr__(self, "context_shape", jax.tree.unflatten(treedef, leaves))
        needs_context = self.chain.conditional or (
            callable(self.base) and not isinstance(self.base, distrax.Distribution)
        )
        if self.context_shape is not None and not needs_context:
            raise ValueError(
                "context_shape was given but neither a layer nor the base of the flow uses it"
            )
        if self.layer_context is not None and self.context_shape is None:
            raise ValueError("layer_context needs a context_shape")
        base_shape = self.chain.base_shape(self.event_shape)  # validates the layers' shapes early
        if isinstance(self.base, distrax.Distribution):
            if tuple(self.base.event_shape) != base_shape:
                raise ValueError(
                    f"the base distribution's event shape {tuple(self.base.event_shape)} differs "
                    f"from the flow's base shape {base_shape}"
                )
        elif self.base is not None and not callable(self.base):
            raise TypeError(
                "base must be None, a distrax.Distribution or a function of the context "
                f"returning one, got {type(self.base).__name__}"
            )

    @property
    def chain(self) -> Chain:
        return Chain(self.layers)

    @property
    def base_shape(self) -> tuple[int, ...]:
        return self.chain.base_shape(self.event_shape)

    @property
    def conditional(self) -> bool:
        return self.context_shape is not None

    @property
    def layer_context_shape(self):
        """The shape (pytree) that conditional layers receive per example, or None."""
        if self.context_shape is None or not self.chain.conditional:
            return None
        if self.layer_context is None:
            return self.context_shape
        leaves, treedef = _shape_leaves(self.context_shape)
        dummy = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, jnp.float32) for s in leaves])
        out = jax.eval_shape(self.layer_context, dummy)
        return jax.tree.map(lambda a: tuple(a.shape), out)

    # -- params -------------------------------------------------------------------------------
    def init(self, key) -> tuple:
        return self.chain.init(check_key(key), self.event_shape, self.layer_context_shape)

    def data_init(self, params, x, context=None):
        """Data-dependent initialisation (ActNorm) from a batch ``x``."""
        x, context = self.check_inputs(x, context)
        return self.chain.data_init(params, x, self._layer_ctx(context))

    # -- distributions ------------------------------------------------------------------------
    def base_distribution(self, context=None, temperature: float = 1.0) -> distrax.Distribution:
        """The (tempered) base distribution; for a context-dependent base, at ``context``."""
        if self.base is None:
            shape = self.base_shape
            dist = distrax.Independent(
                distrax.Normal(jnp.zeros(shape), jnp.ones(shape)),
                reinterpreted_batch_ndims=len(shape),
            )
        elif isinstance(self.base, distrax.Distribution):
            dist = self.base
        else:
            dist = self.base(context)
            if not isinstance(dist, distrax.Distribution):
                raise TypeError(
                    f"base(context) must return a distrax.Distribution, got {type(dist).__name__}"
                )
        if tuple(dist.event_shape) != self.base_shape:
            raise ValueError(
                f"the base distribution's event shape {tuple(dist.event_shape)} differs from the "
                f"flow's base shape {self.base_shape}"
            )
        return _tempered(dist, temperature)

    def bijector(self, params, context=None) -> distrax.Bijector:
        """The flow's bijector; ``context`` is what the layers receive (after ``layer_context``)."""
        return self.chain.bind(params, context)

    def distribution(self, params, context=None, temperature: float = 1.0) -> distrax.Transformed:
        """The flow as a ``distrax.Transformed`` (context fixed to a shared ``context``)."""
        if context is not None:
            context, batch = self.check_context(context)
            if batch:
                raise ValueError(
                    "distribution() takes one shared context (no batch dims); use log_prob / "
                    "sample_and_log_prob for batched contexts"
                )
        return distrax.Transformed(
            self.base_distribution(context, temperature),
            self.bijector(params, self._layer_ctx(context)),
        )

    def log_prob(self, params, x, context=None):
        """``log p(x)`` for ``x`` of shape ``batch + event_shape``."""
        x, context = self.check_inputs(x, context)
        z, log_det = self.bijector(params, self._layer_ctx(context)).inverse_and_log_det(x)
        return self.base_distribution(context).log_prob(z) + log_det

    def sample_and_log_prob(
        self, params, key, n: int | None = None, context=None, temperature: float = 1.0
    ):
        """Draws and their log-density: shape ``(n,) + B + event_shape`` for a context with batch
        shape ``B`` (``B = ()`` without a context; ``n=None`` gives one draw per context)."""
        key = check_key(key)
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"n (the number of draws) must be a positive int or None, got {n!r}")
        context, batch = self.check_context(context)
        base = self.base_distribution(context, temperature)
        dist_batch = tuple(base.batch_shape)
        lead = ((n,) if n is not None else ()) + batch[: len(batch) - len(dist_batch)]
        z, log_q = base.sample_and_log_prob(seed=key, sample_shape=lead)
        full = z.shape[: z.ndim - len(self.base_shape)]
        x, log_det = self.bijector(
            params, self._layer_ctx(self._broadcast(context, full))
        ).forward_and_log_det(z)
        return x, log_q - log_det

    def sample(self, params, key, n: int | None = None, context=None, temperature: float = 1.0):
        return self.sample_and_log_prob(params, key, n, context, temperature)[0]

    # -- inputs (shapes are static, so these checks cost nothing under jit) --------------------
    def check_context(self, context, batch: tuple[int, ...] | None = None):
        """Validates a context against ``context_shape``; returns it and its batch shape."""
        if self.context_shape is None:
            if context is not None:
                raise ValueError("this flow is unconditional; do not pass a context")
            return None, ()
        if context is None:
            raise ValueError(
                f"this flow is conditional: pass a context of shape (..., {self.context_shape})"
                if _is_shape(self.context_shape)
                else f"this flow is conditional: pass a context pytree shaped {self.context_shape}"
            )
        shapes, treedef = _shape_leaves(self.context_shape)
        try:
            leaves = treedef.flatten_up_to(context)
        except (ValueError, TypeError):
            raise ValueError(
                f"expected a context structured like context_shape {self.context_shape}, got "
                f"{jax.tree.map(lambda a: np.shape(a), context)}"
            ) from None
        arrays, batches = [], []
        for shape, leaf in zip(shapes, leaves, strict=True):
            arr = as_float_array(leaf, "context")
            k = len(shape)
            if arr.ndim < k or tuple(arr.shape[arr.ndim - k :]) != shape:
                want = (
                    str(tuple(batch) + shape)
                    if batch is not None
                    else f"(..., {', '.join(map(str, shape))})"
                )
                raise ValueError(
                    f"expected a context of shape {want} (batch dims then context_shape "
                    f"{shape}), got {tuple(arr.shape)}"
                )
            arrays.append(arr)
            batches.append(tuple(arr.shape[: arr.ndim - k]))
        if len(set(batches)) > 1:
            raise ValueError(f"the context's leaves have different batch shapes {batches}")
        return jax.tree.unflatten(treedef, arrays), batches[0]

    def check_inputs(self, x, context=None):
        """Validates data (and context) against the flow: ``x`` is ``batch + event_shape`` and a
        context's batch shape must end ``batch``. Returns ``x`` and the context broadcast to
        ``batch``."""
        x = as_float_array(x, "data")
        k = len(self.event_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k :]) != self.event_shape:
            raise ValueError(
                f"expected data of shape (..., {', '.join(map(str, self.event_shape))}) "
                f"(batch dims then the event shape {self.event_shape}), got {tuple(x.shape)}"
            )
        batch = tuple(x.shape[: x.ndim - k])
        context, ctx_batch = self.check_context(context, batch)
        if context is None:
            return x, None
        if len(ctx_batch) > len(batch) or batch[len(batch) - len(ctx_batch) :] != ctx_batch:
            raise ValueError(
                f"the context's batch shape {ctx_batch} must equal the data's batch shape {batch} "
                "or its trailing dims (a shared context has none)"
            )
        return x, self._broadcast(context, batch)

    def _broadcast(self, context, batch: tuple[int, ...]):
        if context is None:
            return None
        shapes, treedef = _shape_leaves(self.context_shape)
        leaves = treedef.flatten_up_to(context)
        return jax.tree.unflatten(
            treedef,
            [jnp.broadcast_to(a, tuple(batch) + s) for a, s in zip(leaves, shapes, strict=True)],
        )

    def _layer_ctx(self, context):
        if context is None or not self.chain.conditional:
            return None
        return context if self.layer_context is None else self.layer_context(context)


def _tempered(dist: distrax.Distribution, temperature) -> distrax.Distribution:
    """``dist`` scaled about its mean by ``temperature`` (nothing to do at a static 1)."""
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        if temperature == 1:
            return dist
    ndims = len(dist.event_shape)
    mean = dist.mean()
    t = jnp.asarray(temperature, mean.dtype)
    affine = distrax.ScalarAffine(shift=(1.0 - t) * mean, scale=t)
    return distrax.Transformed(dist, distrax.Block(affine, ndims) if ndims else affine)


# -- ready-made flows -------------------------------------------------------------------------


def planar_flow(dim: int, num_layers: int, unroll: int = 1, **layer_options) -> Flow:
    """``num_layers`` planar layers (the blog's and Rezende & Mohamed's VI flow);
    ``layer_options`` go to the planar layer."""
    return Flow((Repeat(make_layer("planar", **layer_options), num_layers, unroll=unroll),), (dim,))


def realnvp_flow(
    dim: int,
    num_layers: int,
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    context_shape: tuple[int, ...] | None = None,
    transform: str = "affine",
    unroll: int = 1,
) -> Flow:
    """``num_layers`` couplings alternating which half is transformed (RealNVP).

    Pairs of couplings with opposite parity are stacked in a ``Repeat``; an odd count adds one
    more coupling.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if dim < 2:
        raise ValueError(f"RealNVP needs at least 2 dimensions, got {dim}")
    make = lambda parity: make_layer(
        f"{transform}_coupling", parity=parity, hidden=tuple(hidden), activation=activation
    )
    layers: list[Layer] = []
    if num_layers >= 2:
        layers.append(Repeat(Chain((make(0), make(1))), num_layers // 2, unroll=unroll))
    if num_layers % 2:
        layers.append(make(0))
    return Flow(tuple(layers), (dim,), context_shape)


def check_finite(x, name: str = "data") -> np.ndarray:
    """Host-side check for user data: a clear error on NaN or inf (never silently trained on)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(arr.shape[0], -1) if arr.ndim else bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite values (NaN or inf), e.g. in rows "
            f"{rows[:5].tolist()}; clean or drop them before training"
        )
    return arr
