"""Bijector layers: hyperparameter dataclasses whose ``init`` makes a params pytree and whose
``bind`` turns params (and a context) into a ``distrax.Bijector``.

:data:`REGISTRY` maps a name to a constructor with defaults; configs, the CLI and the generic
tests use it. ``make_layer("affine_coupling", hidden=(128, 128))`` builds one by name.
"""

from __future__ import annotations

import dataclasses
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


def layer_options(name: str) -> tuple[str, ...]:
    """The option names ``make_layer(name, ...)`` accepts."""
    ctor = REGISTRY[name]
    cls = ctor.func if isinstance(ctor, partial) else ctor
    if cls is _default_multiscale:
        cls = MultiScale
    return tuple(f.name for f in dataclasses.fields(cls))


def make_layer(name: str, **kwargs) -> Layer:
    """Builds the registered layer ``name`` with ``kwargs`` overriding its defaults.

    Unknown layer names and unknown options raise with the valid ones listed; option values are
    checked by the layer itself (a ``TypeError`` or ``ValueError`` naming the option).
    """
    if not isinstance(name, str) or name not in REGISTRY:
        raise KeyError(f"unknown layer {name!r}; registered layers: {', '.join(sorted(REGISTRY))}")
    valid = layer_options(name)
    unknown = sorted(k for k in kwargs if k not in valid)
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for layer {name!r}; "
            f"valid options: {', '.join(valid)}"
        )
    return REGISTRY[name](**kwargs)


__all__ = [
    "REGISTRY",
    "make_layer",
    "layer_options",
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
