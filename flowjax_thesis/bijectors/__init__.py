"""Bijector layers: hyperparameter dataclasses whose ``init`` makes a params pytree and whose
``bind`` turns params (and a context) into a ``distrax.Bijector``.

:data:`REGISTRY` maps a name to a constructor with defaults; configs, the CLI and the generic
tests use it. ``make_layer("affine_coupling", hidden=(128, 128))`` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from flowjax_thesis.bijectors.actnorm import ActNorm
from flowjax_thesis.bijectors.affine import ElementwiseAffine, TriangularAffine
from flowjax_thesis.bijectors.autoregressive import Autoregressive
from flowjax_thesis.bijectors.base import EventBijector, Layer, solve_tanh_equation
from flowjax_thesis.bijectors.compose import Chain, Repeat
from flowjax_thesis.bijectors.conv1x1 import Conv1x1
from flowjax_thesis.bijectors.coupling import Coupling
from flowjax_thesis.bijectors.masks import coupling_mask
from flowjax_thesis.bijectors.multiscale import MultiScale
from flowjax_thesis.bijectors.permute import Permute
from flowjax_thesis.bijectors.planar import Planar, Radial
from flowjax_thesis.bijectors.squeeze import Squeeze
from flowjax_thesis.bijectors.sylvester import Sylvester


def _default_multiscale(**kwargs) -> MultiScale:
    step = Chain((ActNorm(), Conv1x1(), Coupling(mask="channel", hidden=(), conv_width=16)))
    return MultiScale(levels=((step,), (step,)), **kwargs)


REGISTRY: dict[str, Callable[..., Layer]] = {
    "planar": Planar,  # u_hat always (Rezende & Mohamed's appendix A.1)
    "planar_project": partial(Planar, constraint="project"),  # the blog's rule (issue 17)
    "radial": Radial,
    "sylvester_orthogonal": partial(Sylvester, kind="orthogonal"),
    "sylvester_householder": partial(Sylvester, kind="householder"),
    "sylvester_triangular": partial(Sylvester, kind="triangular"),
    "affine_coupling": partial(Coupling, transform="affine"),
    "additive_coupling": partial(Coupling, transform="additive"),
    "spline_coupling": partial(Coupling, transform="spline"),
    "maf": partial(Autoregressive, kind="maf"),
    "iaf": partial(Autoregressive, kind="iaf"),
    "elementwise_affine": ElementwiseAffine,
    "triangular_affine": TriangularAffine,
    "actnorm": ActNorm,
    "conv1x1": Conv1x1,
    "reverse": partial(Permute, kind="reverse"),
    "random_permutation": partial(Permute, kind="random"),
    "squeeze": Squeeze,
    "multiscale": _default_multiscale,
}


def make_layer(name: str, **kwargs) -> Layer:
    """Builds the registered layer ``name`` with ``kwargs`` overriding its defaults."""
    if name not in REGISTRY:
        raise KeyError(f"unknown layer {name!r}; registered layers: {', '.join(sorted(REGISTRY))}")
    try:
        return REGISTRY[name](**kwargs)
    except TypeError as err:
        raise TypeError(f"bad options for layer {name!r}: {err}") from None


__all__ = [
    "REGISTRY",
    "make_layer",
    "Layer",
    "EventBijector",
    "solve_tanh_equation",
    "Planar",
    "Radial",
    "Sylvester",
    "Coupling",
    "Autoregressive",
    "ActNorm",
    "ElementwiseAffine",
    "TriangularAffine",
    "Conv1x1",
    "Permute",
    "Squeeze",
    "MultiScale",
    "Chain",
    "Repeat",
    "coupling_mask",
]
