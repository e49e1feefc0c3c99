"""VAEs with flow posteriors (planar, radial, Sylvester, IAF, RealNVP) and with a gradient
boosted (GBNF) posterior: thesis sections 4.5-4.7.5, Table 8."""

from flowjax_thesis.models.vae.likelihoods import (
    LIKELIHOODS,
    discretized_logistic_log_prob,
    log_likelihood,
    log_standard_normal,
)
from flowjax_thesis.models.vae.model import VAE, bits_per_dim, importance_nll
from flowjax_thesis.models.vae.posteriors import (
    IAF,
    POSTERIORS,
    Amortized,
    Boosted,
    Gaussian,
    RealNVP,
    diag_normal,
    make_posterior,
)
from flowjax_thesis.models.vae.sylvester_stack import SylvesterStack

__all__ = [
    "VAE",
    "IAF",
    "POSTERIORS",
    "LIKELIHOODS",
    "Amortized",
    "Boosted",
    "Gaussian",
    "RealNVP",
    "SylvesterStack",
    "diag_normal",
    "bits_per_dim",
    "discretized_logistic_log_prob",
    "importance_nll",
    "log_likelihood",
    "log_standard_normal",
    "make_posterior",
]
