"""Compressive normalizing flows (thesis chapter 5): PPCA, linear-VAE and VAE steps that change
the dimension of a flow, flows mixing them with bijective layers, and image models in bits/dim."""

from flowjax_thesis.models.compressive import ppca
from flowjax_thesis.models.compressive.capacity import capacity_gap, count_params, matched_width
from flowjax_thesis.models.compressive.flow import (
    CompressiveFlow,
    alpha_schedule,
    dual_base_log_prob,
    num_params,
)
from flowjax_thesis.models.compressive.steps import (
    CompressiveStep,
    ConvVAEStep,
    LinearVAEStep,
    PPCAStep,
    VAEStep,
)

__all__ = [
    "ppca",
    "CompressiveFlow",
    "CompressiveStep",
    "PPCAStep",
    "LinearVAEStep",
    "VAEStep",
    "ConvVAEStep",
    "alpha_schedule",
    "dual_base_log_prob",
    "num_params",
    "count_params",
    "capacity_gap",
    "matched_width",
]
