"""A user's NumPyro model: varying intercepts by county, data made in this file."""
import numpy as np
import numpyro
import numpyro.distributions as dist

rng = np.random.default_rng(1)
sizes = np.array([1, 1, 2, 3, 5, 8, 20, 60])
county = np.repeat(np.arange(len(sizes)), sizes)
floor = rng.integers(0, 2, county.size).astype(float)
log_radon = rng.normal(1.0, 0.5, len(sizes))[county] - 0.6 * floor + 0.7 * rng.normal(size=county.size)


def radon():
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("county", len(sizes)):
        a = numpyro.sample("a", dist.Normal(mu, tau))
    beta = numpyro.sample("beta_floor", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("house", county.size):
        numpyro.sample("y", dist.Normal(a[county] + beta * floor, sigma), obs=log_radon)
