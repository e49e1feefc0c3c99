"""Compressive flows train data-parallel: 1 and 4 simulated devices give the same parameters
(gradient training of a VAE-step flow and the PPCA flow's EM + gradient transition)."""

import os
import subprocess
import sys

import numpy as np

CODE = r"""
import sys
import jax, numpy as np, optax
from flowjax_thesis.data.images import load_images
from flowjax_thesis.models.compressive.images import (
    ImageModel, build_flow, gradient_training, ppca_flow_transition)
from flowjax_thesis.train import data_mesh, fit
from flowjax_thesis.train.sharding import to_host

out = sys.argv[1]
data = load_images("digits", seed=0)
arrays = {}
for compression in ("vae", "ppca"):
  flow = build_flow(data.image_shape, compression, 16, steps_per_level=1, levels=1, width=8,
                  vae_hidden=(16,), conv_vae_width=8)
  model = ImageModel(flow, data.num_bins, "uniform")
  k0 = jax.random.PRNGKey(0)
  params = model.data_init(model.init(k0), data.train[:64], k0)
  opt = optax.adam(1e-3)
  transition = (ppca_flow_transition(model, opt, anneal_steps=4) if compression == "ppca"
                else gradient_training(model, opt))
  mesh = data_mesh() if len(jax.devices()) > 1 else None
  res = fit(transition, transition.init(params), data.train[:256], key=jax.random.PRNGKey(1),
            steps=6, batch_size=32, chunk_size=3, progress=False, mesh=mesh)
  for i, x in enumerate(jax.tree.leaves(to_host(res.state))):
      arrays[f'{compression}{i}'] = np.asarray(x)
np.savez(out, devices=len(jax.devices()), **arrays)
"""


def train(devices, path):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(path)


def test_one_and_four_devices_agree(tmp_path):
    one = train(1, tmp_path / "one.npz")
    four = train(4, tmp_path / "four.npz")
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    names = [k for k in one.files if k != "devices"]
    assert (
        sum(k.startswith("vae") for k in names) > 4 and sum(k.startswith("ppca") for k in names) > 4
    )
    for k in names:
        np.testing.assert_allclose(four[k], one[k], rtol=2e-4, atol=2e-5)
