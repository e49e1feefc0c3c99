"""Metrics of chapter 6: RMSE, earth mover's distance, PSNR, SSIM, pixel diversity."""

from __future__ import annotations

import numpy as np


def rmse(y, y_hat) -> float:
    """Root mean squared error over all entries."""
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(y_hat)) ** 2)))


def emd(a, b) -> tuple[float, str]:
    """Earth mover's (Wasserstein-1, Euclidean ground cost) distance between two equal-weight
    samples. Uses POT's exact network-simplex solver (``ot.emd2``) when installed, otherwise
    scipy's ``linear_sum_assignment`` (exact for equal-size samples). Returns
    ``(distance, solver)``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"emd needs (n, D) and (m, D) samples, got {a.shape} and {b.shape}")
    cost = np.sqrt(np.sum((a[:, None, :] - b[None, :, :]) ** 2, -1))
    try:
        import ot
    except ImportError:
        ot = None
    if ot is not None:
        wa = np.full(len(a), 1.0 / len(a))
        wb = np.full(len(b), 1.0 / len(b))
        return float(ot.emd2(wa, wb, cost, numItermax=10_000_000)), "pot"
    if len(a) != len(b):
        raise ValueError(
            "without POT (pip install pot) the EMD uses scipy's assignment solver, which needs "
            f"equal sample sizes; got {len(a)} and {len(b)}"
        )
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean()), "scipy-assignment"


def psnr(y, y_hat, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio per image (``10 log10(range^2 / MSE)``) of ``(n, H, W, C)``."""
    y = np.asarray(y, np.float64)
    y_hat = np.asarray(y_hat, np.float64)
    mse = np.mean((y - y_hat) ** 2, axis=(-3, -2, -1))
    return 10 * np.log10(data_range**2 / np.maximum(mse, 1e-12))


def ssim(y, y_hat, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity per image with scikit-image's ``structural_similarity`` (the
    maintained reference implementation; 7x7 window, or the largest odd window that fits)."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError as err:
        raise ImportError(
            "SSIM needs scikit-image: pip install 'scikit-image>=0.22' "
            "(or the package's [psr] extra)"
        ) from err
    y = np.asarray(y, np.float64)
    y_hat = np.asarray(y_hat, np.float64)
    win = min(7, y.shape[-3], y.shape[-2])
    win -= 1 - win % 2
    return np.array(
        [
            structural_similarity(a, b, data_range=data_range, channel_axis=-1, win_size=win)
            for a, b in zip(y, y_hat, strict=True)
        ]
    )


def have_ssim() -> bool:
    try:
        import skimage.metrics  # noqa: F401
    except ImportError:
        return False
    return True


def pixel_diversity(samples) -> float:
    """Mean over images and pixels of the standard deviation across samples; ``samples`` has
    shape ``(num_samples, n, H, W, C)`` (several SR samples of each of ``n`` LR images)."""
    return float(np.mean(np.std(np.asarray(samples), axis=0)))
