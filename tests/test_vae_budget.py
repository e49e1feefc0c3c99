"""The VAE networks (the same function as with flax's convolutions) and the ``vae-flows`` step
budget."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.models.vae.networks import Decoder, Encoder, small_kernel


class GatedConv(nn.Module):
    """The networks' gated layer written with flax's Conv and ConvTranspose (the reference;
    its class name gives the reference networks the same parameter paths as ours)."""

    features: int
    kernel: tuple[int, int]
    strides: int
    padding: str | tuple
    transpose: bool = True

    @nn.compact
    def __call__(self, x):
        out = (nn.ConvTranspose if self.transpose else nn.Conv)(
            2 * self.features, self.kernel, strides=(self.strides,) * 2, padding=self.padding
        )(x)
        a, g = jnp.split(out, 2, axis=-1)
        return a * nn.sigmoid(g)


class _FlaxDecoder(nn.Module):
    image_shape: tuple[int, int, int]
    out_channels: int

    @nn.compact
    def __call__(self, z):
        h, w, _ = self.image_shape
        k = small_kernel(self.image_shape)
        x = z.reshape(z.shape[:-1] + (1, 1, z.shape[-1]))
        x = GatedConv(32, (h // 4, w // 4), 1, "VALID")(x)
        x = GatedConv(16, (k, k), 2, "SAME")(x)
        x = GatedConv(16, (k, k), 2, "SAME")(x)
        return nn.Conv(self.out_channels, (1, 1))(x)


class _FlaxEncoder(nn.Module):
    image_shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, x):
        h, w, _ = self.image_shape
        k = small_kernel(self.image_shape)
        pad = ((k // 2, k // 2),) * 2
        x = GatedConv(16, (k, k), 2, pad, transpose=False)(x)
        x = GatedConv(32, (k, k), 2, pad, transpose=False)(x)
        x = GatedConv(256, (h // 4, w // 4), 1, "VALID", transpose=False)(x)
        return x.reshape(x.shape[:-3] + (256,))


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1)])
@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_networks_same_params_init_and_function_as_flax_convolutions(shape, which):
    """Our encoder and decoder against the same networks written with flax's Conv /
    ConvTranspose: parameters, initial values and outputs."""
    if which == "decoder":
        net, ref = Decoder(shape, 1), _FlaxDecoder(shape, 1)
        x = jax.random.normal(jax.random.PRNGKey(2), (3, 5, 6))
    else:
        net, ref = Encoder(shape), _FlaxEncoder(shape)
        x = jax.random.uniform(jax.random.PRNGKey(2), (3, 5, *shape))
    params = net.init(jax.random.PRNGKey(0), x)
    ref_params = ref.init(jax.random.PRNGKey(0), x)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_array_equal(a, b)  # same names, shapes and initial values
    assert jax.tree.structure(params) == jax.tree.structure(ref_params)
    np.testing.assert_allclose(net.apply(params, x), ref.apply(params, x), atol=1e-5)
    # gradients: every layer configuration is checked against flax in tests/test_patch_conv.py


# -- vae-flows: the step budget, the posteriors setting and merging parts ------------------------


def _settings(**kw):
    from flowjax_thesis.experiments.vae import VAE_FLOWS_CPU

    return replace(VAE_FLOWS_CPU, **kw)


def test_shared_budget_gives_gbnf_plus_the_same_steps_as_every_posterior():
    from flowjax_thesis.experiments.vae import gbnf_schedule

    cfg = _settings(steps=3000, anneal_steps=1000, gbnf_components=4, finetune_steps=100)
    b = gbnf_schedule(cfg)
    assert b["gbnf_boost_steps_per_component"] == (3000 - 4 * 100) // 4 == 650
    assert b["gbnf_plus_total_steps"] == 4 * (650 + 100) == 3000 == b["steps_every_other_posterior"]
    assert b["gbnf_total_steps"] == 2600  # GBNF is GBNF+ before fine-tuning: never more
    assert b["gbnf_anneal_steps_per_stage"] == round(1000 * 650 / 3000)
    assert "shared" in b["split"] and "650" in b["split"]


def test_per_component_budget_is_the_thesis_schedule():
    from flowjax_thesis.experiments.vae import gbnf_schedule

    cfg = _settings(
        steps=500,
        anneal_steps=100,
        gbnf_components=3,
        finetune_steps=50,
        gbnf_budget="per_component",
    )
    b = gbnf_schedule(cfg)
    assert b["gbnf_boost_steps_per_component"] == 500
    assert b["gbnf_anneal_steps_per_stage"] == 100
    assert (b["gbnf_total_steps"], b["gbnf_plus_total_steps"]) == (1500, 1650)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"steps": 400, "finetune_steps": 100, "gbnf_components": 4}, "'steps' \\(400\\) must"),
        ({"gbnf_budget": "equal"}, "'gbnf_budget' must be one of"),
    ],
)
def test_budget_bad_input_names_the_setting(kw, match):
    from flowjax_thesis.experiments.vae import gbnf_schedule

    with pytest.raises(ValueError, match=match):
        gbnf_schedule(_settings(**kw))


def test_unknown_posterior_is_named():
    from flowjax_thesis.experiments.vae import check_posteriors

    assert check_posteriors(("gaussian", "gbnf+")) == ("gaussian", "gbnf+")
    with pytest.raises(ValueError, match=r"setting 'posteriors': unknown \['gausian'\]"):
        check_posteriors(("gausian",))


def _part(tmp_path, name, cfg, models):
    """A fake part's run directory: config.json as the CLI writes it, summary.json with
    per-seed results of ``models`` ({posterior: {seed: nll}})."""
    d = tmp_path / name
    d.mkdir()
    config = {"experiment": "vae-flows", "profile": "cpu", **asdict(cfg)}
    (d / "config.json").write_text(json.dumps(config))
    summary = {
        "models": {
            p: {"per_seed": [{"seed": s, "nll": v, "neg_elbo": v + 3.0} for s, v in nll.items()]}
            for p, nll in models.items()
        },
        "checks": {"shock_per_seed": []},
    }
    (d / "summary.json").write_text(json.dumps(summary))
    return str(d)


def test_parts_merge_into_one_table_by_posterior_and_seed(tmp_path):
    from flowjax_thesis.experiments.vae import _load_part, _summarise

    cfg = _settings(data="mnist")
    a = _part(
        tmp_path,
        "a",
        replace(cfg, posteriors=("gaussian",), seeds=(0, 1)),
        {"gaussian": {0: 90.0, 1: 92.0}},
    )
    b = _part(tmp_path, "b", replace(cfg, posteriors=("iaf",), seeds=(0,)), {"iaf": {0: 89.0}})
    results = {}
    for path in (a, b + "/summary.json"):
        for name, by_seed in _load_part(path, cfg)["models"].items():
            results.setdefault(name, {}).update(by_seed)
    summary = _summarise(results, "mnist", "nats")
    g, i = summary["models"]["gaussian"], summary["models"]["iaf"]
    assert g["seeds"] == [0, 1] and g["nll_mean"] == pytest.approx(91.0)
    assert g["nll_std"] == pytest.approx(np.std([90.0, 92.0], ddof=1))
    assert i["beats_vae_nll_every_seed"] is True  # compared on the common seed 0 only
    assert [r["model"] for r in summary["comparison"]] == ["VAE", "IAF"]
    assert summary["checks"]["flows_below_vae_nll"] == {"iaf": True}


def test_merge_refuses_a_part_with_other_settings(tmp_path):
    from flowjax_thesis.experiments.vae import _load_part

    cfg = _settings(data="mnist")
    other = _part(tmp_path, "a", replace(cfg, steps=cfg.steps + 1), {"gaussian": {0: 90.0}})
    with pytest.raises(ValueError, match=r"was run with steps="):
        _load_part(other, cfg)
    with pytest.raises(FileNotFoundError, match="config.json"):
        _load_part(str(tmp_path / "missing"), cfg)
