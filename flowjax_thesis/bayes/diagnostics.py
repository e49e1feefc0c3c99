"""Reliability diagnostics for a variational fit ``q`` of a posterior ``p``.

- :func:`psis`: Pareto-smoothed importance sampling (Vehtari et al., 2015/2024) of the log
  weights ``log p~(x) - log q(x)``, ``x ~ q``, with ArviZ's implementation (the ``bayes`` extra).
  Its shape estimate ``k-hat`` is the reliability diagnostic of Yao et al. (2018): below 0.5 (or
  ``min(1 - 1/log10(S), 0.7)``) the importance-corrected estimates are trustworthy; above 0.7 the
  approximation is too far from the posterior for importance sampling to repair.
- :func:`weighted_moments`: (PSIS-)importance-corrected posterior means and standard deviations.
- :func:`moment_errors`: errors of means and standard deviations against a reference (NUTS or
  exact draws), standardised by the reference standard deviation.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

EXTRA_HINT = "pip install 'flowjax_thesis[bayes]'"
#: log weights spread less than this (nats) are treated as constant by :func:`psis`.
CONSTANT_SPREAD = 1e-3


def require_arviz():
    """Imports ArviZ or raises an ImportError naming the ``bayes`` extra."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError as err:
        raise ImportError(
            f"PSIS k-hat uses ArviZ, which is not installed; install the bayes extra: {EXTRA_HINT}"
        ) from err
    return arviz


def khat_threshold(num_samples: int) -> float:
    """The sample-size dependent k-hat threshold ``min(1 - 1 / log10(S), 0.7)`` of Vehtari et
    al. (2024) above which PSIS estimates are unreliable."""
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7)


def psis(log_weights) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, normalised log weights and the Pareto shape ``k-hat`` (ArviZ).

    Non-finite log weights (e.g. a sample where the target underflows) are set to the minimum
    finite weight's level minus 100, i.e. weight ~ 0. Numerically constant log weights (spread
    below ``CONSTANT_SPREAD`` nats: ``q`` equals the posterior up to float32 rounding) have no
    tail to fit; ArviZ then returns ``k = inf``, we return the uniform weights and ``k = 0``.
    """
    az = require_arviz()
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if lw.size < 10:
        raise ValueError(f"PSIS needs at least 10 draws, got {lw.size}")
    finite = np.isfinite(lw)
    if not finite.any():
        raise ValueError("all log weights are non-finite")
    lw = np.where(finite, lw, lw[finite].min() - 100.0)
    if np.ptp(lw) < CONSTANT_SPREAD:
        return np.full(lw.shape, -np.log(lw.size)), 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smoothed, k = az.psislw(lw.copy())
    return np.asarray(smoothed), float(k)


def khat(log_weights) -> float:
    """The PSIS Pareto shape ``k-hat`` of ``log_weights`` (see :func:`psis`)."""
    return psis(log_weights)[1]


def weighted_moments(draws, log_weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Self-normalised importance-weighted mean and sd per coordinate of ``draws`` (``(n, d)``).

    ``log_weights=None`` gives the plain sample moments (the uncorrected ``q`` estimate). Pass
    PSIS-smoothed log weights from :func:`psis` for the PSIS-corrected estimate.
    """
    x = np.asarray(draws, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"draws must have shape (n, dim), got {x.shape}")
    if log_weights is None:
        w = np.full(x.shape[0], 1.0 / x.shape[0])
    else:
        lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
        if lw.shape[0] != x.shape[0]:
            raise ValueError(f"{lw.shape[0]} log weights for {x.shape[0]} draws")
        lw = np.where(np.isfinite(lw), lw, -np.inf)
        w = np.exp(lw - lw.max())
        w /= w.sum()
    mean = w @ x
    sd = np.sqrt(np.maximum(w @ (x - mean) ** 2, 0.0))
    return mean, sd


def ess_of_weights(log_weights) -> float:
    """Kish's effective sample size ``1 / sum w_i^2`` of normalised importance weights."""
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    return float(1.0 / np.sum(w**2))


def moment_errors(mean, sd, ref_mean, ref_sd) -> dict:
    """How far ``(mean, sd)`` are from the reference, averaged over coordinates:

    - ``mean_err``: ``mean |m - m_ref| / sd_ref`` (in reference standard deviations);
    - ``sd_err``: ``mean |sd / sd_ref - 1|`` (relative error of the standard deviations);
    - ``sd_ratio``: ``median sd / sd_ref`` (< 1: under-dispersed, the mean-field signature).
    """
    mean, sd = np.asarray(mean, float), np.asarray(sd, float)
    ref_mean, ref_sd = np.asarray(ref_mean, float), np.asarray(ref_sd, float)
    if not (mean.shape == sd.shape == ref_mean.shape == ref_sd.shape):
        raise ValueError("means and sds must all have the same shape")
    ratio = sd / ref_sd
    return {
        "mean_err": float(np.mean(np.abs(mean - ref_mean) / ref_sd)),
        "sd_err": float(np.mean(np.abs(ratio - 1.0))),
        "sd_ratio": float(np.median(ratio)),
    }
