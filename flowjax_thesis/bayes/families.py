"""Variational families for posteriors on ``R^dim``, all as :class:`~flowjax_thesis.flows.Flow`.

- ``mean_field``: one :class:`~flowjax_thesis.bijectors.affine.ElementwiseAffine` layer,
  ``q = N(m, diag(s^2))``.
- ``full_rank``: one :class:`~flowjax_thesis.bijectors.affine.TriangularAffine` layer,
  ``q = N(m, L L^T)``.
- ``planar``, ``radial``: ``layers`` planar / radial layers (Rezende & Mohamed, 2015).
- ``realnvp``: ``layers`` affine couplings (alternating halves, with a fixed random permutation
  every two couplings).
- ``iaf``: ``layers`` inverse autoregressive layers (MADE), reversed orders in between.
- ``spline``: ``layers`` rational-quadratic spline couplings (neural spline flow).
- ``gbnf``: gradient boosted flows (a mixture of ``realnvp`` components), when
  :mod:`flowjax_thesis.models.gbnf` is available; built and trained by
  :func:`flowjax_thesis.bayes.fit_family`, not by :func:`make_family`.

Every flow family has an elementwise affine layer nearest the data, so it starts exactly where
the mean-field family starts (the deeper layers start near the identity) and only has to learn the
non-Gaussian part in standardised coordinates.
"""

from __future__ import annotations

import importlib.util

from flowjax_thesis.bijectors import Chain, Repeat, make_layer
from flowjax_thesis.bijectors.affine import ElementwiseAffine, TriangularAffine
from flowjax_thesis.flows import Flow

FAMILIES = ("mean_field", "full_rank", "planar", "radial", "realnvp", "iaf", "spline")


def gbnf_available() -> bool:
    """Whether the gradient-boosted-flow module (issue 3) exists in this tree."""
    try:
        return importlib.util.find_spec("flowjax_thesis.models.gbnf") is not None
    except ModuleNotFoundError:
        return False


def make_family(
    name: str,
    dim: int,
    *,
    layers: int = 8,
    hidden: tuple[int, ...] = (32, 32),
    init_log_scale: float = 0.0,
    num_bins: int = 8,
) -> Flow:
    """The variational family ``name`` on ``R^dim`` (see the module docstring)."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    hidden = tuple(int(h) for h in hidden)
    affine = ElementwiseAffine(init_log_scale)
    if name == "mean_field":
        return Flow((affine,), (dim,))
    if name == "full_rank":
        return Flow((TriangularAffine(init_log_scale),), (dim,))
    if name in ("planar", "radial"):
        return Flow((affine, Repeat(make_layer(name), layers)), (dim,))
    if name in ("realnvp", "spline"):
        if dim < 2:
            raise ValueError(f"coupling flows need dim >= 2, got {dim}")
        kind = "affine_coupling" if name == "realnvp" else "spline_coupling"
        extra = {} if name == "realnvp" else {"num_bins": num_bins}
        pair = Chain(
            (
                make_layer(kind, parity=0, hidden=hidden, **extra),
                make_layer(kind, parity=1, hidden=hidden, **extra),
                make_layer("random_permutation", seed=dim),
            )
        )
        return Flow((affine, Repeat(pair, max(layers // 2, 1))), (dim,))
    if name == "iaf":
        step = Chain((make_layer("iaf", hidden=hidden), make_layer("reverse")))
        return Flow((affine, Repeat(step, layers)), (dim,))
    if name == "gbnf":
        raise NotImplementedError(
            "the gbnf family needs flowjax_thesis.models.gbnf (issue 3), which is not in this tree"
            if not gbnf_available()
            else "a GBNF is a mixture of flows, not one Flow: fit it with "
            "flowjax_thesis.bayes.fit_family(model, 'gbnf', ...)"
        )
    raise KeyError(f"unknown family {name!r}; available: {', '.join(FAMILIES)}")
