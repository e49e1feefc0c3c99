"""Trains the chapter-6 models a few steps through the engine and saves their parameters; run as
a subprocess by test_psr.py with 1 and with 4 simulated devices.

    python tests/psr_worker.py OUT.npz

``train_psr`` trains on ``data_mesh()`` (every visible device: state replicated, batches
sharded), so the same script is the 1-device and the 4-device run; the data, keys and settings are
fixed, so both must end with the same parameters.
"""

import sys

import jax
import numpy as np

from flowjax_thesis.models.psr import (
    DropoutStudent,
    JointPSR,
    image_nll,
    image_psr_flow,
    psr_optimizer,
    train_psr,
    vector_psr_flow,
)
from flowjax_thesis.objectives import max_likelihood_loss
from flowjax_thesis.train import gradient_transition


def main(out: str) -> None:
    rng = np.random.default_rng(0)
    steps, batch = 4, 8
    leaves = []

    # the vector PSR flow (scanned chunks) and the MC-dropout student (dropout keys per example)
    y = rng.normal(size=(64, 2)).astype(np.float32)
    x = np.round(y[:, :1]).astype(np.float32)
    flow = vector_psr_flow(2, 1, num_layers=1, hidden=(8,), features=4)
    params = flow.data_init(flow.init(jax.random.PRNGKey(0)), y, x)
    step = gradient_transition(max_likelihood_loss(flow), psr_optimizer(1e-2, steps))
    res = train_psr(step, params, (y, x), key=jax.random.PRNGKey(1), steps=steps, batch_size=batch)
    leaves += jax.tree.leaves(res.state.params)
    drop = DropoutStudent(2, (8,), 0.2)
    step = gradient_transition(drop.loss, psr_optimizer(1e-2, steps))
    res = train_psr(
        step, drop.init(jax.random.PRNGKey(2), 1), (y, x), key=jax.random.PRNGKey(3),
        steps=steps, batch_size=batch,
    )  # fmt: skip
    leaves += jax.tree.leaves(res.state.params)

    # the image PSR flow and the joint PSR flow (mode="step", convolutions)
    y_int = rng.integers(0, 5, size=(32, 4, 4, 1))
    x_int = y_int[:, ::2, ::2]
    img = image_psr_flow((4, 4, 1), scale=2, num_levels=1, steps_per_scale=1, conv_width=4,
                         features=2, encoder_features=4, growth=2, dense_layers=1, dense_blocks=1,
                         cond_hidden=(4,))  # fmt: skip
    step = gradient_transition(image_nll(img, 5), psr_optimizer(1e-2, steps))
    res = train_psr(
        step, img.init(jax.random.PRNGKey(4)), (y_int, x_int), key=jax.random.PRNGKey(5),
        steps=steps, batch_size=batch, mode="step",
    )  # fmt: skip
    leaves += jax.tree.leaves(res.state.params)
    joint = JointPSR(img, 5, ridge=1e-3, prior_steps=1, prior_width=4)
    step = gradient_transition(joint.loss, psr_optimizer(1e-2, steps))
    res = train_psr(
        step, joint.init(jax.random.PRNGKey(6)), (y_int, x_int), key=jax.random.PRNGKey(7),
        steps=steps, batch_size=batch, mode="step",
    )  # fmt: skip
    leaves += jax.tree.leaves(res.state.params)
    np.savez(out, *[np.asarray(a) for a in leaves], devices=len(jax.devices()))


if __name__ == "__main__":
    main(sys.argv[1])
