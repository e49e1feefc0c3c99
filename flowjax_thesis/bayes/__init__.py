"""Flow-based variational inference for Bayesian models, with reliability diagnostics.

The workflow of the blog series *Variational Inference for MRP with Reliable Posterior
Distributions* (A. Timm): posteriors as pure log-densities on ``R^dim``
(:mod:`~flowjax_thesis.bayes.models`), variational families from mean-field to neural spline flows
(:mod:`~flowjax_thesis.bayes.families`), ELBO / IWELBO / stick-the-landing fits
(:mod:`~flowjax_thesis.bayes.vi`), PSIS k-hat and importance-corrected moments
(:mod:`~flowjax_thesis.bayes.diagnostics`, ArviZ) and a NUTS reference
(:mod:`~flowjax_thesis.bayes.nuts`, NumPyro). Any NumPyro model becomes a posterior with
:func:`from_numpyro` (:mod:`~flowjax_thesis.bayes.numpyro_bridge`), fits come out as ArviZ
``InferenceData`` with :func:`to_inference_data` (:mod:`~flowjax_thesis.bayes.arviz_output`), and
NumPyro's own autoguides are assessed the same way in :mod:`~flowjax_thesis.bayes.autoguides`.
ArviZ and NumPyro are the optional ``bayes`` extra and are imported only when used.
"""

from flowjax_thesis.bayes.families import FAMILIES, make_family
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
from flowjax_thesis.bayes.numpyro_bridge import from_numpyro, reparameterized_reference
from flowjax_thesis.bayes.objectives import iw_elbo, iw_elbo_loss
from flowjax_thesis.bayes.vi import (
    OBJECTIVES,
    Fitted,
    assess,
    assess_draws,
    draws_and_log_weights,
    fit_family,
)

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
    "iw_elbo",
    "iw_elbo_loss",
    "OBJECTIVES",
    "Fitted",
    "fit_family",
    "assess",
    "draws_and_log_weights",
    "assess_draws",
    "from_numpyro",
    "reparameterized_reference",
    "to_inference_data",
]


def to_inference_data(fitted, model, num_samples=4000, psis=False, *, key=None):
    """See :func:`flowjax_thesis.bayes.arviz_output.to_inference_data` (imported on use: ArviZ
    is the optional ``bayes`` extra)."""
    from flowjax_thesis.bayes.arviz_output import to_inference_data as impl

    return impl(fitted, model, num_samples, psis, key=key)
