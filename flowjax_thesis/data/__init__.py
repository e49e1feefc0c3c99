"""Data sets: 2-D toy data of FFJORD / gradient boosted flows."""

from flowjax_thesis.data.toy import (
    TOY_DATASETS,
    sample_2spirals,
    sample_8gaussians,
    sample_checkerboard,
    sample_circles,
    sample_moons,
    sample_pinwheel,
    sample_rings,
    sample_swissroll,
    sample_toy,
    train_val_test,
)

__all__ = [
    "TOY_DATASETS",
    "sample_2spirals",
    "sample_8gaussians",
    "sample_checkerboard",
    "sample_circles",
    "sample_moons",
    "sample_pinwheel",
    "sample_rings",
    "sample_swissroll",
    "sample_toy",
    "train_val_test",
]
