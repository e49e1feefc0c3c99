"""Image data for the PSR experiments: integer images ``(N, H, W, C)`` plus their number of
intensity levels.

``load_images(name)`` reads MNIST, SVHN, CIFAR-10, CelebA or ImageNet64 through
TensorFlow Datasets when it is installed and the data are already in its data directory
(``download=False``: nothing is fetched), and otherwise falls back to scikit-learn's 8x8 digits,
which ship with scikit-learn (1797 images, 17 grey levels 0..16). The returned ``source`` string
says which data were actually used; experiments print it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TFDS_NAMES = {
    "mnist": "mnist",
    "svhn": "svhn_cropped",
    "cifar10": "cifar10",
    "celeba": "celeb_a",
    "imagenet64": "downsampled_imagenet/64x64",
}


@dataclass
class ImageData:
    train: np.ndarray  # (N, H, W, C) integers in [0, num_bins)
    val: np.ndarray
    test: np.ndarray
    num_bins: int
    source: str


def _split(images: np.ndarray, seed: int, val_frac: float, test_frac: float):
    perm = np.random.default_rng(seed).permutation(len(images))
    n_test = int(round(test_frac * len(images)))
    n_val = int(round(val_frac * len(images)))
    test = images[perm[:n_test]]
    val = images[perm[n_test : n_test + n_val]]
    return images[perm[n_test + n_val :]], val, test


def load_digits_images(seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.2) -> ImageData:
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.int32)[..., None]  # (1797, 8, 8, 1), 0..16
    train, val, test = _split(images, seed, val_frac, test_frac)
    return ImageData(train, val, test, 17, "scikit-learn digits 8x8 (17 grey levels), offline")


def _load_tfds(name: str, max_examples: int | None):
    import tensorflow_datasets as tfds  # optional dependency ([tfds] extra)

    tf_name = TFDS_NAMES[name]
    builder = tfds.builder(tf_name)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    splits = {}
    for split in ("train", "test"):
        avail = split if split in builder.info.splits else "validation"
        ds = builder.as_dataset(split=avail, as_supervised=False)
        imgs = []
        for i, ex in enumerate(tfds.as_numpy(ds)):
            if max_examples is not None and i >= max_examples:
                break
            imgs.append(np.asarray(ex["image"]))
        splits[split] = np.stack(imgs).astype(np.int32)
    return splits


def load_images(name: str = "digits", seed: int = 0, max_examples: int | None = None) -> ImageData:
    """Images for PSR. ``name`` in ``("digits",) + tuple(TFDS_NAMES)``; any TFDS failure
    (package missing, data not prepared, no network) falls back to the digits with a note."""
    if name == "digits":
        return load_digits_images(seed)
    if name not in TFDS_NAMES:
        raise ValueError(
            f"unknown image data set {name!r}; use 'digits' or one of {list(TFDS_NAMES)}"
        )
    try:
        splits = _load_tfds(name, max_examples)
    except Exception as err:  # noqa: BLE001 - any failure means: not available offline
        data = load_digits_images(seed)
        data.source += f" (requested {name!r} via TFDS was not available: {type(err).__name__})"
        return data
    train, val, _ = _split(splits["train"], seed, 0.05, 0.0)
    return ImageData(train, val, splits["test"], 256, f"{name} via tensorflow-datasets")
