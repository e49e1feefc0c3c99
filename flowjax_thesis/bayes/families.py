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
- ``gbnf``: gradient boosted flows (a mixture of ``realnvp`` components), built and trained by
  :func:`flowjax_thesis.bayes.fit_family`, not by :func:`make_family`.

Every flow family has an elementwise affine layer nearest the data, so it starts exactly where
the mean-field family starts (the deeper layers start near the identity) and only has to learn the
non-Gaussian part in standardised coordinates.
"""

from __future__ import annotations

from flowjax_thesis.families import make_flow
from flowjax_thesis.flows import Flow

FAMILIES = ("mean_field", "full_rank", "planar", "radial", "realnvp", "iaf", "spline")


def make_family(
    name: str,
    dim: int,
    *,
    layers: int = 8,
    hidden: tuple[int, ...] = (32, 32),
    init_log_scale: float = 0.0,
    num_bins: int = 8,
) -> Flow:
    """The variational family ``name`` on ``R^dim`` (see the module docstring):
    :func:`flowjax_thesis.families.make_flow` with an elementwise affine layer nearest the data
    and, for the coupling families, a fixed random permutation after every pair of couplings."""
    if name == "gbnf":
        raise NotImplementedError(
            "a GBNF is a mixture of flows, not one Flow: fit it with "
            "flowjax_thesis.bayes.fit_family(model, 'gbnf', ...)"
        )
    if name not in FAMILIES:
        raise KeyError(f"unknown family {name!r}; available: {', '.join(FAMILIES)}")
    if isinstance(dim, bool) or int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return make_flow(
        name,
        int(dim),
        layers,
        tuple(int(h) for h in hidden),
        affine=True,
        init_log_scale=init_log_scale,
        num_bins=num_bins,
        permute=True,
    )
