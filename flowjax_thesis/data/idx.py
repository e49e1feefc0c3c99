"""The IDX file format of MNIST and Fashion-MNIST (LeCun et al.), read and written with numpy.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the data in C order (big-endian for multi-byte types). The MNIST
files use type ``0x08`` (uint8): images ``(N, 28, 28)``, labels ``(N,)``. Files ending in ``.gz``
are decompressed on the fly.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

# type code -> big-endian numpy dtype (the IDX specification's table)
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}


def parse_idx(data: bytes, name: str = "data") -> np.ndarray:
    """Parses the bytes of an IDX file into an array (native byte order)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{name}: not an IDX file (expected magic bytes 00 00 <type> <ndim>, got "
            f"{data[:4].hex(' ') or 'an empty file'})"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise ValueError(
            f"{name}: unknown IDX type code 0x{code:02x}; expected one of "
            f"{', '.join(f'0x{c:02x}' for c in IDX_TYPES)}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{name}: IDX header says shape {shape} ({expected} bytes of data) but the file holds "
            f"{len(data) - header} bytes after the header"
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (``.gz`` decompressed) into an array of its shape and type."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return parse_idx(f.read(), path)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (uint8, int8, int16, int32, float32 or float64)."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(
            f"array: IDX stores uint8, int8, int16, int32, float32 or float64, got {array.dtype}"
        )
    if array.ndim > 255:
        raise ValueError(f"array: IDX stores at most 255 dimensions, got {array.ndim}")
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    return header + np.ascontiguousarray(array, IDX_TYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(idx_bytes(array))
