"""Small matplotlib helpers shared by the experiments (Agg backend, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def grid_figure(rows: int, cols: int, size: float = 2.4):
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def show_density(ax, image: np.ndarray, lim: float, title: str | None = None):
    """``image[i, j]`` is the density at ``(x_j, y_i)`` with ``y`` increasing upwards."""
    ax.imshow(np.asarray(image), origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis")
    if title:
        ax.set_title(title, fontsize=9)


def show_samples(ax, points: np.ndarray, lim: float, title: str | None = None, bins: int = 120):
    points = np.asarray(points)
    ax.hist2d(
        points[:, 0], points[:, 1], bins=bins, range=[[-lim, lim], [-lim, lim]], cmap="viridis"
    )
    if title:
        ax.set_title(title, fontsize=9)


def line_plot(xs, series: dict[str, list], xlabel: str, ylabel: str, dashed: dict | None = None):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, ys in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    for label, y in (dashed or {}).items():
        ax.axhline(y, linestyle="--", color="gray", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig
