"""Integer-valued image data sets for density estimation in bits/dim (chapter 5), and
dequantisation.

Every loader returns a :class:`GreyImages` whose ``train``/``val``/``test`` are **integer** arrays
``(N, H, W, C)`` (dtype uint8) with values in ``0 .. num_bins - 1``, and ``source``, a sentence
saying exactly which data was used (experiments print it).

- ``mnist``: 60,000/10,000 28x28x1 with 256 levels; the last 10,000 training images are the
  validation set. From the standard IDX files (``train-images-idx3-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``) in the data directory, else the cache filled by
  ``flowjax-thesis data get mnist`` (:mod:`flowjax_thesis.data.fetch`), else TFDS ``mnist``.
- ``fashion-mnist``: Fashion-MNIST, the same sizes and split as ``mnist``, from the cache filled
  by ``flowjax-thesis data get fashion-mnist``, else TFDS ``fashion_mnist``.
- ``cifar10``: 50,000/10,000 32x32x3 (last 5,000 training images for validation) from the
  standard ``cifar-10-batches-py`` pickles, or TFDS ``cifar10``.
- ``imagenet32``: the downsampled ImageNet 32x32 of Oord et al. / Chrabaszcz et al. from
  ``train_data_batch_*`` / ``val_data`` (npz pickles), or TFDS ``downsampled_imagenet/32x32``;
  the validation set is the test set, as in the thesis (last 10,000 training images: validation).
- ``digits`` (offline): the 1,797 8x8 images that ship with scikit-learn, 17 grey levels (0..16),
  split 1,397/200/200 with a fixed seed. An offline stand-in, NOT the thesis's data.

The data directory is ``data_dir`` or ``$FLOWJAX_DATA_DIR`` or ``~/data``. Nothing is downloaded:
``load_images(name, fallback=True)`` falls back to ``digits`` when files are missing and says so,
unless stand-ins are refused (``strict``, or the ``full`` profile's policy,
:mod:`flowjax_thesis.data.availability`): then :class:`MissingData` names what was looked for,
where, and the command that gets it. What was loaded is reported to the run's data log.

Dequantisation: :func:`uniform_dequantize` maps integer pixels ``k`` to ``(k + u) / num_bins``
with ``u ~ U(0, 1)``; the log-density of the continuous model on ``[0, 1]^D`` then gives a lower
bound on the discrete log-likelihood after adding ``D log(num_bins)`` nats
(:func:`flowjax_thesis.objectives.bits_per_dim` does that with ``num_bins``).
"""

from __future__ import annotations

import glob
import os
import pickle
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.data.availability import note_used, require
from flowjax_thesis.data.idx import read_idx

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "imagenet32")


@dataclass(frozen=True)
class GreyImages:
    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    num_bins: int
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train.shape[1:])

    @property
    def num_dims(self) -> int:
        return int(np.prod(self.image_shape))


def data_directory(data_dir: str | None = None) -> str:
    return os.path.expanduser(data_dir or os.environ.get("FLOWJAX_DATA_DIR") or "~/data")


def _find(directory: str, *names: str) -> str | None:
    if not os.path.isdir(directory):
        return None
    for name in names:
        for root, _, files in os.walk(directory):
            if name in files:
                return os.path.join(root, name)
    return None


def _split(x, sizes, seed):
    perm = np.random.default_rng(seed).permutation(len(x))
    a, b, _ = sizes
    return x[perm[:a]], x[perm[a : a + b]], x[perm[a + b :]]


def load_digits(seed: int = 0) -> GreyImages:
    """scikit-learn's 8x8 digits (values 0..16, 17 levels) as ``(N, 8, 8, 1)`` uint8."""
    from sklearn.datasets import load_digits as sk_digits

    x = sk_digits().images.astype(np.uint8)[..., None]
    train, val, test = _split(x, (1397, 200, 200), seed)
    return GreyImages(
        "digits",
        train,
        val,
        test,
        17,
        "scikit-learn digits (1,797 8x8 grey images, 17 levels), split 1,397/200/200 (seed "
        f"{seed}) -- an offline stand-in, NOT the thesis's MNIST/CIFAR-10/ImageNet32",
    )


def _tfds(name: str, directory: str):
    """``(train, test, source)`` from a TFDS data set already prepared in ``directory``, or None
    (TFDS not installed, or the set not prepared: nothing is downloaded)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    try:
        ds = tfds.load(name, batch_size=-1, data_dir=directory, download=False)
    except Exception:  # noqa: BLE001 - not prepared there
        return None
    splits = {k: np.asarray(tfds.as_numpy(v)["image"], np.uint8) for k, v in ds.items()}
    test = splits.get("test", splits.get("validation"))
    return splits["train"], test, f"TFDS {name}"


def tfds_note(name: str, directory: str) -> str:
    """``TFDS 'name' in directory`` plus why it was not used when TFDS is not installed."""
    import importlib.util

    missing = importlib.util.find_spec("tensorflow_datasets") is None
    return f"TFDS {name!r} in {directory}" + (
        " (tensorflow-datasets is not installed)" if missing else " (not prepared there)"
    )


def _from_cache(name: str):
    """``(train, test, source)`` from the ``data get`` cache, or None when not fetched."""
    from flowjax_thesis.data.fetch import SOURCES, cached_file, load_image_arrays

    arrays = load_image_arrays(name)
    if arrays is None:
        return None
    source = f"{SOURCES[name].description} (cached {cached_file(name)})"
    return arrays["x_train"][..., None], arrays["x_test"][..., None], source


def _load_mnist(directory):
    train = _find(directory, "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz")
    test = _find(directory, "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz")
    if train and test:
        return read_idx(train)[..., None], read_idx(test)[..., None], f"MNIST IDX files {train}"
    return _from_cache("mnist") or _tfds("mnist", directory)


def _load_fashion_mnist(directory):
    return _from_cache("fashion-mnist") or _tfds("fashion_mnist", directory)


def _load_cifar10(directory):
    first = _find(directory, "data_batch_1")
    if first:
        folder = os.path.dirname(first)

        def read(name):
            with open(os.path.join(folder, name), "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            return batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

        train = np.concatenate([read(f"data_batch_{i}") for i in range(1, 6)])
        return train, read("test_batch"), f"CIFAR-10 python batches in {folder}"
    return _tfds("cifar10", directory)


def _load_imagenet32(directory):
    files = sorted(glob.glob(os.path.join(directory, "**", "train_data_batch_*"), recursive=True))
    val = _find(directory, "val_data", "val_data.npz")
    if files and val:

        def read(path):
            with open(path, "rb") as f:
                try:
                    batch = np.load(f, allow_pickle=True)
                    data = batch["data"]
                except (ValueError, OSError):
                    f.seek(0)
                    data = pickle.load(f)["data"]
            return np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

        train = np.concatenate([read(p) for p in files])
        return train, read(val), f"ImageNet32 batches in {os.path.dirname(files[0])}"
    return _tfds("downsampled_imagenet/32x32", directory)


# what each loader looks for (with the TFDS name) and the command that fetches it
_LOOKED_FOR = {
    "mnist": ("IDX files train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]", "mnist"),
    "fashion-mnist": (None, "fashion_mnist"),
    "cifar10": ("cifar-10-batches-py/data_batch_{1..5} and test_batch", "cifar10"),
    "imagenet32": ("train_data_batch_* and val_data[.npz]", "downsampled_imagenet/32x32"),
}


def looked_for(name: str, directory: str) -> list[str]:
    """Every place :func:`load_images` searches for ``name``, as text for error messages."""
    from flowjax_thesis.data.fetch import SOURCES, cache_dir

    files, tfds_name = _LOOKED_FOR[name]
    places = [f"{files} under {directory} (data_dir or $FLOWJAX_DATA_DIR)"] if files else []
    if name in SOURCES:
        places.append(f"the data cache {cache_dir()} (`flowjax-thesis data get {name}`)")
    return places + [tfds_note(tfds_name, directory)]


def fetch_command(name: str) -> str | None:
    """``flowjax-thesis data get NAME`` when :mod:`~flowjax_thesis.data.fetch` can get it."""
    from flowjax_thesis.data.fetch import SOURCES

    return f"flowjax-thesis data get {name}" if name in SOURCES else None


def load_images(
    name: str = "digits",
    data_dir: str | None = None,
    seed: int = 0,
    fallback: bool = True,
    strict: bool | None = None,
) -> GreyImages:
    """Loads ``name`` (one of :data:`DATASETS`), see the module docstring.

    A missing data set raises :class:`~flowjax_thesis.data.availability.MissingData` (a
    ``FileNotFoundError`` naming what was looked for, where, and the command that gets it) when
    ``fallback`` is False or stand-ins are refused (``strict=True``, or ``strict=None`` inside a
    strict :func:`~flowjax_thesis.data.availability.data_policy`); otherwise it is replaced by
    the offline ``digits`` and ``source`` says so.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown image data set {name!r}; choose one of {DATASETS}")
    if name == "digits":
        return _noted(load_digits(seed), stand_in=True)
    directory = data_directory(data_dir)
    loaded = {
        "mnist": _load_mnist,
        "fashion-mnist": _load_fashion_mnist,
        "cifar10": _load_cifar10,
        "imagenet32": _load_imagenet32,
    }[name](directory)
    if loaded is None:
        places = looked_for(name, directory)
        stand_in = "scikit-learn digits, 8x8, NOT the thesis's data"
        strict = True if not fallback else strict
        require(name, places, command=fetch_command(name), stand_in=stand_in, strict=strict)
        data = load_digits(seed)
        return _noted(
            GreyImages(
                data.name,
                data.train,
                data.val,
                data.test,
                data.num_bins,
                f"{name} not found ({'; '.join(places)}); using {data.source}",
            ),
            stand_in=True,
        )
    train, test, source = loaded
    n_val = 5000 if name == "cifar10" else 10000
    return _noted(GreyImages(name, train[:-n_val], train[-n_val:], test, 256, source), False)


def _noted(data: GreyImages, stand_in: bool) -> GreyImages:
    note_used(data.name, data.source, stand_in)
    return data


def uniform_dequantize(key, x_int, num_bins: int):
    """``(x + u) / num_bins`` with ``u ~ U(0, 1)``: continuous data in ``[0, 1]``."""
    x = jnp.asarray(x_int, jnp.float32)
    return (x + jax.random.uniform(key, x.shape)) / num_bins
