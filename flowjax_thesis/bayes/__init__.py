"""Flow-based variational inference for Bayesian models, with reliability diagnostics.

The workflow of the blog series *Variational Inference for MRP with Reliable Posterior
Distributions* (A. Timm): posteriors as pure log-densities on ``R^dim``
(:mod:`~flowjax_thesis.bayes.models`), variational families from mean-field to neural spline flows
(:mod:`~flowjax_thesis.bayes.families`), ELBO / IWELBO / stick-the-landing fits
(:mod:`~flowjax_thesis.bayes.vi`), PSIS k-hat and importance-corrected moments
(:mod:`~flowjax_thesis.bayes.diagnostics`, ArviZ) and a NUTS reference
(:mod:`~flowjax_thesis.bayes.nuts`, NumPyro). ArviZ and NumPyro are the optional ``bayes`` extra
and are imported only when used.
"""

from flowjax_thesis.bayes.families import FAMILIES, gbnf_available, make_family
from flowjax_thesis.bayes.models import (
    MODELS,
    BayesModel,
    beta_bernoulli,
    conjugate_gaussian,
    eight_schools,
    get_model,
    make_mrp_data,
    mrp_model,
    neal_funnel,
    poststratify,
)
from flowjax_thesis.bayes.objectives import iw_elbo, iw_elbo_loss
from flowjax_thesis.bayes.vi import OBJECTIVES, Fitted, assess, draws_and_log_weights, fit_family

__all__ = [
    "BayesModel",
    "MODELS",
    "get_model",
    "eight_schools",
    "neal_funnel",
    "mrp_model",
    "make_mrp_data",
    "poststratify",
    "conjugate_gaussian",
    "beta_bernoulli",
    "FAMILIES",
    "make_family",
    "gbnf_available",
    "iw_elbo",
    "iw_elbo_loss",
    "OBJECTIVES",
    "Fitted",
    "fit_family",
    "assess",
    "draws_and_log_weights",
]
