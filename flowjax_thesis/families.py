"""The flow families, built by one factory: :func:`make_flow`.

One place that turns a family name and a size into a :class:`~flowjax_thesis.flows.Flow`, for
GBNF components, variational families (Bayes VI) and VAE posteriors alike:

- ``realnvp``: affine couplings alternating halves; ``realnvp_actnorm``: the same after a
  (data-initialised) ActNorm, so that even a 1-step flow can place and scale every coordinate
  (a 1-step coupling alone leaves the conditioning half at the base); ``spline``:
  rational-quadratic couplings (neural spline flow); ``glow``: steps of ActNorm, an invertible
  linear map (1x1 convolution on vectors) and an affine coupling;
- ``maf`` / ``iaf``: MADE autoregressive layers with reversals in between;
- ``planar``, ``radial``, ``sylvester_orthogonal``, ``sylvester_householder``,
  ``sylvester_triangular``: ``num_layers`` copies of that layer (unconditional);
- ``mean_field``: one elementwise affine layer, ``q = N(m, diag(s^2))`` (for a standard base);
  ``full_rank``: one lower-triangular affine layer, ``q = N(m, L L^T)``.

``affine=True`` puts an elementwise affine layer nearest the data in front of any family, so the
flow starts as a learnable diagonal Gaussian and the deeper layers (starting near the identity)
only learn the non-Gaussian part in standardised coordinates (the Bayes VI families' choice).
``base`` and ``context_shape`` go to ``Flow`` (a distrax distribution or a function of the
context returning one: a VAE posterior's per-example Gaussian).
"""

from __future__ import annotations

from collections.abc import Sequence

from flowjax_thesis.bijectors import Chain, Layer, Repeat, make_layer
from flowjax_thesis.bijectors.affine import ElementwiseAffine, TriangularAffine
from flowjax_thesis.flows import Flow

FLOW_FAMILIES = (
    "realnvp",
    "realnvp_actnorm",
    "spline",
    "glow",
    "maf",
    "iaf",
    "planar",
    "radial",
    "sylvester_orthogonal",
    "sylvester_householder",
    "sylvester_triangular",
    "mean_field",
    "full_rank",
)
UNCONDITIONAL = (
    "planar",
    "radial",
    "sylvester_orthogonal",
    "sylvester_householder",
    "sylvester_triangular",
    "mean_field",
    "full_rank",
)


def _couplings(
    kind: str, num_layers: int, hidden, activation: str, permute_seed=None, **extra
) -> tuple[Layer, ...]:
    """``num_layers`` couplings alternating parity: pairs stacked in a ``Repeat`` (scanned),
    one more coupling for an odd count; with ``permute_seed`` each pair ends with a fixed random
    permutation (seeded), so that coordinates mix across the two halves."""
    make = lambda parity: make_layer(
        kind, parity=parity, hidden=hidden, activation=activation, **extra
    )
    layers: list[Layer] = []
    if num_layers >= 2:
        pair = (make(0), make(1))
        if permute_seed is not None:
            pair += (make_layer("random_permutation", seed=permute_seed),)
        layers.append(Repeat(Chain(pair), num_layers // 2))
    if num_layers % 2:
        layers.append(make(0))
    return tuple(layers)


def _layers(name, dim, num_layers, hidden, activation, num_bins, permute) -> tuple[Layer, ...]:
    if name in ("realnvp", "realnvp_actnorm", "spline"):
        if dim < 2:
            raise ValueError(f"coupling flows need dim >= 2, got dim={dim}")
        seed = dim if permute else None
        if name == "spline":
            return _couplings(
                "spline_coupling", num_layers, hidden, activation, seed, num_bins=num_bins
            )
        layers = _couplings("affine_coupling", num_layers, hidden, activation, seed)
        return ((make_layer("actnorm"),) + layers) if name == "realnvp_actnorm" else layers
    if name == "glow":
        if dim < 2:
            raise ValueError(f"coupling flows need dim >= 2, got dim={dim}")
        step = Chain(
            (
                make_layer("actnorm"),
                make_layer("conv1x1"),
                make_layer("affine_coupling", hidden=hidden, activation=activation),
            )
        )
        return (Repeat(step, num_layers),)
    if name in ("maf", "iaf"):
        return (
            Repeat(Chain((make_layer(name, hidden=hidden), make_layer("reverse"))), num_layers),
        )
    if name in ("planar", "radial") or name.startswith("sylvester_"):
        return (Repeat(make_layer(name), num_layers),)
    if name == "mean_field":
        return (ElementwiseAffine(),)
    if name == "full_rank":
        return (TriangularAffine(),)
    raise ValueError(f"unknown flow family {name!r}; choose one of {', '.join(FLOW_FAMILIES)}")


def make_flow(
    name: str,
    dim: int,
    num_layers: int = 4,
    hidden: Sequence[int] = (64,),
    context_shape=None,
    base=None,
    *,
    activation: str = "tanh",
    num_bins: int = 8,
    affine: bool = False,
    init_log_scale: float = 0.0,
    permute: bool = False,
    layer_context=None,
) -> Flow:
    """A ``num_layers``-step flow of family ``name`` on vectors of size ``dim`` (see the module
    docstring; ``num_layers`` is ignored by ``mean_field``/``full_rank``). ``permute`` adds a
    fixed random permutation (seed ``dim``) after every pair of couplings (``realnvp*``,
    ``spline``). ``layer_context`` goes to ``Flow`` (what conditional layers receive;
    ``lambda c: None`` keeps them unconditional when only the base uses the context)."""
    if name not in FLOW_FAMILIES:
        raise ValueError(f"unknown flow family {name!r}; choose one of {', '.join(FLOW_FAMILIES)}")
    if isinstance(dim, bool) or int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if isinstance(num_layers, bool) or int(num_layers) != num_layers or num_layers < 1:
        raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
    if context_shape is not None and name in UNCONDITIONAL and not callable(base):
        raise ValueError(
            f"{name} layers are unconditional (context_shape given without a base that uses "
            "it); use realnvp, realnvp_actnorm, spline, glow, maf or iaf for a conditional flow"
        )
    if not isinstance(hidden, (tuple, list)):
        raise TypeError(
            f"make_flow: hidden must be a tuple of layer widths, got {hidden!r}"
            + (f" (for one layer write ({hidden},))" if isinstance(hidden, int) else "")
        )
    hidden = tuple(hidden)
    layers = _layers(name, int(dim), int(num_layers), hidden, activation, num_bins, permute)
    if affine and name not in ("mean_field", "full_rank"):
        layers = (ElementwiseAffine(init_log_scale),) + layers
    elif init_log_scale and name in ("mean_field", "full_rank"):
        layers = (type(layers[0])(init_log_scale),)
    return Flow(layers, (int(dim),), context_shape, base=base, layer_context=layer_context)


def component_flow(
    family: str,
    dim: int,
    num_layers: int,
    hidden: Sequence[int] = (64,),
    activation: str = "tanh",
    context_shape=None,
) -> Flow:
    """One GBNF component: :func:`make_flow` with the positional order the GBNF code uses."""
    return make_flow(family, dim, num_layers, hidden, context_shape, activation=activation)
