"""The vector PSR flow: ``p(y | x)`` for ``y in R^D`` given ``x in R^d`` (the student of the
student-teacher evaluation, section 6.4).

An MLP encoder ``h(x)`` gives ``features`` units; each of the ``num_layers`` steps is a
conditional ActNorm, a conditional invertible linear map (the 1x1 convolution of a vector) and two
conditional affine couplings (opposite halves) with MLP conditioners and the bounded scale of
eq. 6.8. The result is a plain :class:`~flowjax_thesis.flows.Flow` whose context is ``x``::

    flow = vector_psr_flow(2, 1)
    params = flow.data_init(flow.init(key), y, x)
    flow.log_prob(params, y, x)                              # log p(y | x)
    flow.sample(params, key, context=x, temperature=0.8)     # one draw per row of x
"""

from __future__ import annotations

from collections.abc import Sequence

from flowjax_thesis.bijectors import ActNorm, Chain, Conv1x1, Coupling, Repeat
from flowjax_thesis.flows import Flow
from flowjax_thesis.models.psr.conditioning import Encoded
from flowjax_thesis.nets import MLP


def vector_psr_flow(
    event_dim: int,
    context_dim: int,
    num_layers: int = 8,
    hidden: Sequence[int] = (64, 64),
    encoder_hidden: Sequence[int] = (64,),
    features: int = 16,
    cond_hidden: Sequence[int] = (32,),
    scale_bound: float = 2.0,
    activation: str = "tanh",
) -> Flow:
    """Conditional PSR flow on vectors: ``event_shape=(event_dim,)``,
    ``context_shape=(context_dim,)``."""
    if event_dim < 2:
        raise ValueError(f"the vector PSR flow needs event_dim >= 2 (couplings), got {event_dim}")
    if context_dim < 1:
        raise ValueError(f"context_dim must be >= 1, got {context_dim}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")

    def coupling(parity):
        return Coupling(
            "affine",
            mask="half",
            parity=parity,
            hidden=tuple(hidden),
            activation=activation,
            scale_bound=scale_bound,
        )

    step = Chain(
        (
            ActNorm(hidden=tuple(cond_hidden)),
            Conv1x1(hidden=tuple(cond_hidden)),
            coupling(0),
            coupling(1),
        )
    )
    encoder = MLP(tuple(encoder_hidden), features, activation, zero_init=False)
    layer = Encoded(Repeat(step, num_layers), encoder)
    return Flow((layer,), (event_dim,), (context_dim,))
