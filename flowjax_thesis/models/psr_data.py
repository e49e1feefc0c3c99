"""Image data for the PSR experiments: the package's integer-image container
(:class:`flowjax_thesis.data.images.GreyImages`: ``train``/``val``/``test`` integer arrays
``(N, H, W, C)``, ``num_bins`` intensity levels, a ``source`` sentence saying which data were used).

``digits``, ``mnist``, ``fashion-mnist`` and ``cifar10`` come from
:func:`flowjax_thesis.data.images.load_images` (files in the data directory, nothing downloaded).
``svhn``, ``celeba`` and ``imagenet64`` are
read through TensorFlow Datasets when it is installed and the data are already prepared in its
data directory. Any data set that is not available falls back to scikit-learn's 8x8 digits
(1797 images, 17 grey levels), and ``source`` says so; experiments print it.
"""

from __future__ import annotations

import numpy as np

from flowjax_thesis.data import images
from flowjax_thesis.data.availability import note_used, require

TFDS_NAMES = {
    "svhn": "svhn_cropped",
    "celeba": "celeb_a",
    "imagenet64": "downsampled_imagenet/64x64",
}
NAMES = ("digits", "mnist", "fashion-mnist", "cifar10") + tuple(TFDS_NAMES)


def _load_tfds(name: str, max_examples: int | None):
    import tensorflow_datasets as tfds  # optional dependency ([tfds] extra)

    builder = tfds.builder(TFDS_NAMES[name])
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
        splits[split] = np.stack(imgs).astype(np.uint8)
    return splits


def load_images(
    name: str = "digits", seed: int = 0, max_examples: int | None = None
) -> images.GreyImages:
    """Images for PSR, ``name`` in :data:`NAMES`; unavailable data fall back to the digits."""
    if name not in NAMES:
        raise ValueError(f"unknown image data set {name!r}; use one of {list(NAMES)}")
    if name not in TFDS_NAMES:
        return images.load_images(name, seed=seed, fallback=True)
    try:
        splits = _load_tfds(name, max_examples)
    except Exception as err:  # noqa: BLE001 - any failure means: not available offline
        why = f"{type(err).__name__}: {err}"
        place = f"TFDS {TFDS_NAMES[name]!r}, prepared in its data directory ({why})"
        require(name, [place], stand_in="scikit-learn digits, 8x8, NOT the thesis's data")
        data = images.load_digits(seed)
        note = f" (requested {name!r} via TFDS was not available: {type(err).__name__})"
        note_used(data.name, data.source + note, True)
        return images.GreyImages(
            data.name, data.train, data.val, data.test, data.num_bins, data.source + note
        )
    perm = np.random.default_rng(seed).permutation(len(splits["train"]))
    n_val = max(1, round(0.05 * len(perm)))
    train = splits["train"][perm[n_val:]]
    val = splits["train"][perm[:n_val]]
    note_used(name, f"{name} via tensorflow-datasets", False)
    return images.GreyImages(
        name, train, val, splits["test"], 256, f"{name} via tensorflow-datasets"
    )
