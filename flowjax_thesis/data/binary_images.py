"""Image data sets of the thesis's VAE experiments (section 4.7.1, Table 8).

Every loader returns an :class:`ImageData` with ``train``/``val``/``test`` arrays of shape
``(N, H, W, 1)``, float32 in [0, 1], plus what the model needs to know (likelihood, whether the
training images are binarised afresh at every step) and ``source``, a sentence saying exactly
which data was used (experiments print it).

- ``mnist``: statically binarised MNIST of Larochelle & Murray (2011), 50,000/10,000/10,000, from
  ``binarized_mnist_{train,valid,test}.amat`` in the data directory; else the raw MNIST of the
  cache filled by ``flowjax-thesis data get mnist`` (:mod:`flowjax_thesis.data.fetch`),
  **dynamically** binarised (the standard choice when the static binarisation is not at hand):
  grey levels k/255 with the last 10,000 training images as validation set (50,000/10,000/10,000);
  training images are Bernoulli draws at every step, validation and test images are binarised
  once with a fixed seed (as ``omniglot``); else TFDS ``binarized_mnist``.
- ``fashion-mnist``: Fashion-MNIST from the ``data get fashion-mnist`` cache, dynamically
  binarised and split exactly as the cached ``mnist``.
- ``omniglot``: the IWAE repository's ``chardata.mat`` (24,345 training and 8,070 test images
  of 28x28); the last 1,345 training images are the validation set (23,000/1,345/8,070);
  dynamically binarised: training images are Bernoulli draws at every step, validation and test
  images are binarised once with a fixed seed.
- ``freyfaces``: ``frey_rawface.mat`` (1,965 grey 28x20 faces), randomly split 1,565/200/200
  with a fixed seed as van den Berg et al. (2018); pixel values k/255 for a 256-way decoder.
- ``caltech101``: ``caltech101_silhouettes_28_split1.mat`` (4,100/2,264/2,307 binary 28x28).
- ``digits`` (offline): the 1,797 8x8 digit images that ship with scikit-learn (16 grey levels),
  statically binarised once by Bernoulli draws with probability ``value / 16`` (seed 0, the way
  Larochelle binarised MNIST), split 1,397/200/200 with a fixed seed.

The data directory is ``data_dir`` or ``$FLOWJAX_DATA_DIR`` or ``~/data``. Nothing is downloaded:
``load_binary_images(name, fallback=True)`` falls back to ``digits`` when the files are missing
and says so in ``source``, unless stand-ins are refused (``strict``, or the ``full`` profile's
policy, :mod:`flowjax_thesis.data.availability`): then ``MissingData`` names what was looked
for, where, and the command that gets it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from flowjax_thesis.data.availability import note_used, require

DATASETS = ("mnist", "fashion-mnist", "omniglot", "freyfaces", "caltech101", "digits")


@dataclass(frozen=True)
class ImageData:
    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    likelihood: str  # "bernoulli" (binary) or "categorical256" / "logistic256" (8-bit grey)
    dynamic_binarization: bool
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train.shape[1:])

    @property
    def num_dims(self) -> int:
        return int(np.prod(self.image_shape))


def data_directory(data_dir: str | None = None) -> str:
    return os.path.expanduser(data_dir or os.environ.get("FLOWJAX_DATA_DIR") or "~/data")


def _images(x, h, w, order="C") -> np.ndarray:
    x = np.asarray(x, np.float32).reshape((-1, h, w), order=order)
    return x[..., None]


def _split(x, sizes, seed):
    perm = np.random.default_rng(seed).permutation(len(x))
    a, b, _ = sizes
    return x[perm[:a]], x[perm[a : a + b]], x[perm[a + b :]]


def _find(directory, *names):
    for name in names:
        for path in (os.path.join(directory, name), os.path.join(directory, "*", name)):
            if os.path.exists(path):
                return path
        for root, _, files in os.walk(directory):
            if name in files:
                return os.path.join(root, name)
    return None


def load_digits(seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 digits, statically binarised (offline stand-in for MNIST)."""
    from sklearn.datasets import load_digits as sk_digits

    grey = sk_digits().images.astype(np.float32) / 16.0
    rng = np.random.default_rng(0)  # the binarisation is part of the data set: fixed seed
    binary = (rng.uniform(size=grey.shape) < grey).astype(np.float32)[..., None]
    train, val, test = _split(binary, (1397, 200, 200), seed)
    return ImageData(
        "digits",
        train,
        val,
        test,
        "bernoulli",
        False,
        "scikit-learn digits (1,797 8x8 images), statically binarised with p = value/16 "
        "(seed 0), split 1,397/200/200 -- an offline stand-in, NOT the thesis's data sets",
    )


def _load_mnist(directory):
    files = [_find(directory, f"binarized_mnist_{s}.amat") for s in ("train", "valid", "test")]
    if all(files):
        splits = [_images(np.loadtxt(f, dtype=np.float32), 28, 28) for f in files]
        return splits, "statically binarised MNIST (Larochelle & Murray) from " + directory
    cached = _load_cached("mnist")
    if cached is not None:
        return cached
    try:
        import tensorflow_datasets as tfds

        ds = tfds.load("binarized_mnist", batch_size=-1, data_dir=directory, download=False)
    except Exception:  # noqa: BLE001 - not installed or not prepared: nothing is downloaded
        return None
    splits = [np.asarray(tfds.as_numpy(ds[s])["image"], np.float32) for s in ds]
    return splits, "statically binarised MNIST from TFDS"


def _binarise_once(x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)  # part of the data set: a fixed seed
    return (rng.uniform(size=x.shape) < x).astype(np.float32)


def _load_cached(name):
    """Raw 28x28 images of the ``data get`` cache for dynamic binarisation, or None."""
    from flowjax_thesis.data.fetch import SOURCES, cached_file, load_image_arrays

    arrays = load_image_arrays(name)
    if arrays is None:
        return None
    train = arrays["x_train"].astype(np.float32)[..., None] / 255.0
    test = arrays["x_test"].astype(np.float32)[..., None] / 255.0
    train, val = train[:-10000], _binarise_once(train[-10000:])
    source = (
        f"{SOURCES[name].description} (cached {cached_file(name)}), dynamically binarised, "
        "50,000/10,000/10,000"
    )
    return [train, val, _binarise_once(test)], source


def _load_omniglot(directory):
    path = _find(directory, "chardata.mat")
    if path is None:
        return None
    from scipy.io import loadmat

    mat = loadmat(path)
    train = _images(mat["data"].T, 28, 28, order="F")
    test = _images(mat["testdata"].T, 28, 28, order="F")
    train, val = train[:-1345], train[-1345:]
    rng = np.random.default_rng(0)
    val = (rng.uniform(size=val.shape) < val).astype(np.float32)
    test = (rng.uniform(size=test.shape) < test).astype(np.float32)
    return [train, val, test], "Omniglot (IWAE chardata.mat, dynamically binarised) from " + path


def _load_frey(directory, seed):
    path = _find(directory, "frey_rawface.mat")
    if path is None:
        return None
    from scipy.io import loadmat

    faces = loadmat(path, squeeze_me=True, struct_as_record=False)["ff"].T
    faces = _images(faces.astype(np.float32) / 255.0, 28, 20)
    return list(_split(faces, (1565, 200, 200), seed)), "Frey faces from " + path


def _load_caltech(directory):
    path = _find(directory, "caltech101_silhouettes_28_split1.mat")
    if path is None:
        return None
    from scipy.io import loadmat

    mat = loadmat(path)
    splits = [_images(mat[k], 28, 28, order="F") for k in ("train_data", "val_data", "test_data")]
    return splits, "Caltech 101 Silhouettes (28x28 split 1) from " + path


def load_binary_images(
    name: str = "digits",
    data_dir: str | None = None,
    seed: int = 0,
    fallback: bool = True,
    grey_likelihood: str = "categorical256",
    strict: bool | None = None,
) -> ImageData:
    """Loads ``name`` (one of :data:`DATASETS`); see the module docstring for files and splits.

    A missing data set raises :class:`~flowjax_thesis.data.availability.MissingData` (a
    ``FileNotFoundError`` naming what was looked for, where, and the command that gets it) when
    ``fallback`` is False or stand-ins are refused (``strict=True``, or ``strict=None`` inside a
    strict :func:`~flowjax_thesis.data.availability.data_policy`); otherwise it is replaced by
    the offline ``digits`` and ``source`` says so.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    if name == "digits":
        data = load_digits(seed)
        note_used(data.name, data.source, True)
        return data
    directory = data_directory(data_dir)
    loaded = {
        "mnist": lambda: _load_mnist(directory),
        "fashion-mnist": lambda: _load_cached("fashion-mnist"),
        "omniglot": lambda: _load_omniglot(directory),
        "freyfaces": lambda: _load_frey(directory, seed),
        "caltech101": lambda: _load_caltech(directory),
    }[name]()
    if loaded is None:
        places = looked_for(name, directory)
        stand_in = "scikit-learn digits, 8x8, NOT the thesis's data"
        strict = True if not fallback else strict
        require(name, places, command=fetch_command(name), stand_in=stand_in, strict=strict)
        data = load_digits(seed)
        note_used(data.name, f"{name} not found; using {data.source}", True)
        return ImageData(
            data.name,
            data.train,
            data.val,
            data.test,
            data.likelihood,
            data.dynamic_binarization,
            f"{name} not found ({'; '.join(places)}); using {data.source}",
        )
    (train, val, test), source = loaded
    grey = name == "freyfaces"
    dynamic = name == "omniglot" or "dynamically binarised" in source
    note_used(name, source, False)
    return ImageData(
        name, train, val, test, grey_likelihood if grey else "bernoulli", dynamic, source
    )


# the files each loader looks for in the data directory
_FILES = {
    "mnist": "binarized_mnist_{train,valid,test}.amat",
    "fashion-mnist": None,
    "omniglot": "chardata.mat (the IWAE repository's Omniglot)",
    "freyfaces": "frey_rawface.mat",
    "caltech101": "caltech101_silhouettes_28_split1.mat",
}


def looked_for(name: str, directory: str) -> list[str]:
    """Every place :func:`load_binary_images` searches for ``name``, as text."""
    from flowjax_thesis.data.fetch import SOURCES, cache_dir
    from flowjax_thesis.data.images import tfds_note

    places = [f"{_FILES[name]} under {directory} (data_dir or $FLOWJAX_DATA_DIR)"]
    if _FILES[name] is None:
        places = []
    if name in SOURCES:
        places.append(f"the data cache {cache_dir()} (`flowjax-thesis data get {name}`)")
    if name == "mnist":
        places.append(tfds_note("binarized_mnist", directory))
    return places


def fetch_command(name: str) -> str | None:
    """``flowjax-thesis data get NAME`` when :mod:`~flowjax_thesis.data.fetch` can get it."""
    from flowjax_thesis.data.fetch import SOURCES

    return f"flowjax-thesis data get {name}" if name in SOURCES else None
