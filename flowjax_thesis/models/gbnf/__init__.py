"""Gradient boosted normalizing flows (GBNF; thesis chapter 4 and appendix B).

A :class:`GBNF` is ``C`` components of one flow family (any :class:`~flowjax_thesis.flows.Flow`,
built with :func:`flowjax_thesis.families.make_flow`), their params stacked, combined additively
(a mixture) or multiplicatively (a normalised product). One concept per module:

- :mod:`.weights`: the mixture-weight algebra on the params dict (``assign_weight``, the
  renormalised weights of the others, the weight a component is trained at);
- :mod:`.model`: the model (densities, sampling, the multiplicative partition function);
- :mod:`.losses`: the loss of one stage (density: the thesis's resampling (4.13), Frank-Wolfe
  (4.8/4.9), our mixture-NLL variant ``boosted``, importance; VI: eq. 4.20);
- :mod:`.rho`: fitting a new component's weight (line searches and Algorithm 1's projected SGD);
- :mod:`.boost`: the one boosting driver (:func:`boost`: a stage = one ``fit`` call of one
  transition holding the component index, with its own tags; then a weight fit), used by
- :mod:`.density` (:func:`boost_density`) and :mod:`.vi` (:func:`boost_vi`), and by the VAE.
"""

from flowjax_thesis.families import component_flow
from flowjax_thesis.models.gbnf.boost import (
    Stage,
    StageState,
    boost,
    make_schedule,
    stage_transition,
)
from flowjax_thesis.models.gbnf.density import boost_density
from flowjax_thesis.models.gbnf.losses import (
    REWEIGHT,
    THESIS_RULE,
    density_loss,
    frank_wolfe_objective,
    resampling_log_probs,
    vi_loss,
)
from flowjax_thesis.models.gbnf.model import BOOSTING, COMPONENT_MAPS, GBNF
from flowjax_thesis.models.gbnf.rho import (
    RHO_METHODS,
    RhoState,
    density_rho_gradient,
    density_rho_objective,
    grid_minimise,
    rho_sgd_transition,
    vi_rho_gradient,
    vi_rho_objective,
)
from flowjax_thesis.models.gbnf.vi import boost_vi
from flowjax_thesis.models.gbnf.weights import training_weight


def num_parameters(tree) -> int:
    """Number of scalars in a params pytree."""
    import jax
    import numpy as np

    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


__all__ = [
    "BOOSTING",
    "COMPONENT_MAPS",
    "GBNF",
    "REWEIGHT",
    "RHO_METHODS",
    "RhoState",
    "Stage",
    "StageState",
    "THESIS_RULE",
    "boost",
    "boost_density",
    "boost_vi",
    "component_flow",
    "density_loss",
    "density_rho_gradient",
    "density_rho_objective",
    "frank_wolfe_objective",
    "grid_minimise",
    "make_schedule",
    "num_parameters",
    "resampling_log_probs",
    "rho_sgd_transition",
    "stage_transition",
    "training_weight",
    "vi_loss",
    "vi_rho_gradient",
    "vi_rho_objective",
]
