"""Unnormalized 2-D target densities (Rezende & Mohamed 2015 energies and the blog's ring)."""

from flowjax_thesis.targets.energies import (
    TARGET_LIMITS,
    TARGETS,
    get_target,
    log_density_ring,
    log_density_u1,
    log_density_u2,
    log_density_u3,
    log_density_u4,
    w1,
    w2,
    w3,
)

__all__ = [
    "TARGETS",
    "TARGET_LIMITS",
    "get_target",
    "log_density_ring",
    "log_density_u1",
    "log_density_u2",
    "log_density_u3",
    "log_density_u4",
    "w1",
    "w2",
    "w3",
]
