"""Tabular density-estimation data (thesis Table 7).

The UCI sets of the MAF paper (POWER, GAS, HEPMASS, MINIBOONE) and BSDS300 cannot be downloaded
here. :func:`load_tabular` therefore looks for them, in order:

1. ``directory/<name>/{train,val,test}.npy``: splits already preprocessed as in Papamakarios et
   al. (2017) (e.g. exported once from their ``datasets`` package; this module does not redo
   that preprocessing from the raw files);
2. TensorFlow Datasets, if installed and it has the set under the same name;
3. otherwise (``name="sklearn"`` or ``fallback=True``) a data set that ships with scikit-learn:
   ``breast_cancer`` (569 rows, 30 continuous features), split 60/20/20 with a fixed seed and
   standardised with the training mean and std, as MAF does for its sets.

Every loader returns a :class:`TabularData` whose ``source`` says which data was used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from flowjax_thesis.data.availability import note_used, require
from flowjax_thesis.data.images import tfds_note

MAF_SETS = ("power", "gas", "hepmass", "miniboone", "bsds300")
SKLEARN_SETS = ("breast_cancer", "wine", "diabetes")


@dataclass
class TabularData:
    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])


def _standardise(train, val, test):
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return tuple(((a - mu) / sd).astype(np.float32) for a in (train, val, test))


def load_sklearn(name: str = "breast_cancer", seed: int = 0) -> TabularData:
    """A standardised 60/20/20 split of a scikit-learn tabular set (features only)."""
    import sklearn.datasets as skd

    loaders = {
        "breast_cancer": skd.load_breast_cancer,
        "wine": skd.load_wine,
        "diabetes": skd.load_diabetes,
    }
    if name not in loaders:
        raise ValueError(f"unknown scikit-learn set {name!r}; choose one of {SKLEARN_SETS}")
    x = np.asarray(loaders[name]().data, np.float64)
    perm = np.random.default_rng(seed).permutation(len(x))
    x = x[perm]
    n_test = n_val = len(x) // 5
    test, val, train = x[:n_test], x[n_test : n_test + n_val], x[n_test + n_val :]
    train, val, test = _standardise(train, val, test)
    return TabularData(
        name,
        train,
        val,
        test,
        f"scikit-learn {name} ({len(x)} rows, {x.shape[1]} features), standardised; "
        "offline stand-in for the MAF tabular sets",
    )


def load_tabular(
    name: str,
    directory: str | None = None,
    fallback: bool = True,
    seed: int = 0,
    strict: bool | None = None,
) -> TabularData:
    """``name`` in :data:`MAF_SETS` (from ``directory`` or TFDS) or :data:`SKLEARN_SETS`.

    A missing MAF set raises :class:`~flowjax_thesis.data.availability.MissingData` (naming the
    folder and TFDS name looked for) when ``fallback`` is False or stand-ins are refused
    (``strict=True``, or ``strict=None`` inside a strict
    :func:`~flowjax_thesis.data.availability.data_policy`); otherwise breast cancer stands in.
    """
    key = name.lower()
    if key in SKLEARN_SETS or key == "sklearn":
        data = load_sklearn("breast_cancer" if key == "sklearn" else key, seed)
        note_used(data.name, data.source, True)
        return data
    if key not in MAF_SETS:
        raise ValueError(f"unknown tabular set {name!r}; choose from {MAF_SETS + SKLEARN_SETS}")
    directory = directory or os.environ.get("FLOWJAX_TABULAR_DIR")
    if directory:
        folder = os.path.join(directory, key)
        paths = [os.path.join(folder, f"{s}.npy") for s in ("train", "val", "test")]
        if all(os.path.exists(p) for p in paths):
            train, val, test = (np.load(p).astype(np.float32) for p in paths)
            if not (train.ndim == val.ndim == test.ndim == 2):
                raise ValueError(f"{folder}: expected 2-D arrays (rows, features)")
            source = f"preprocessed MAF splits from {folder}"
            note_used(key, source, False)
            return TabularData(key, train, val, test, source)
    try:  # pragma: no cover - TFDS is not installed in the test environment
        import tensorflow_datasets as tfds

        splits = tfds.load(
            key, split=["train", "validation", "test"], batch_size=-1, download=False
        )
        arrays = [np.asarray(next(iter(s.values())), np.float32) for s in tfds.as_numpy(splits)]
        note_used(key, f"TensorFlow Datasets {key}", False)
        return TabularData(key, *arrays, source=f"TensorFlow Datasets {key}")
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        pass
    where = (
        os.path.join(directory, key, "{train,val,test}.npy")
        if directory
        else f"{key}/{{train,val,test}}.npy under a directory (data_dir, or $FLOWJAX_TABULAR_DIR: "
        "not set)"
    )
    places = [
        f"{where} (splits preprocessed as in Papamakarios et al. 2017, e.g. exported from "
        "their datasets package)",
        tfds_note(key, "its default data directory"),
    ]
    require(
        name,
        places,
        stand_in="scikit-learn breast_cancer, 30 features, NOT the thesis's data",
        strict=True if not fallback else strict,
    )
    data = load_sklearn("breast_cancer", seed)
    data.source = f"{name} not available offline; used {data.source}"
    note_used(data.name, data.source, True)
    return data
