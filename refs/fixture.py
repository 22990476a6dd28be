"""Writes golden fixtures as safetensors files (stdlib + numpy only).

Format: 8-byte little-endian header length, JSON header
{"__metadata__": {...}, name: {"dtype": "F32", "shape": [...],
"data_offsets": [begin, end]}}, padded with spaces to 8 bytes, then the raw
little-endian data.  The C tests read them with soma's own reader.
"""
import json
import struct

import numpy as np

FIXTURE_VERSION = "1"


def write(path, tensors, meta=None):
    """tensors: dict name -> numpy array (stored as float32, or int32 for ints)."""
    header = {"__metadata__": {"format": "soma-fixture", "version": FIXTURE_VERSION}}
    if meta:
        header["__metadata__"].update({k: str(v) for k, v in meta.items()})
    blobs = []
    off = 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        if a.dtype.kind in "iu":
            a = a.astype("<i4")
            dt = "I32"
        else:
            a = a.astype("<f4")
            dt = "F32"
        b = a.tobytes(order="C")
        header[name] = {"dtype": dt, "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read(path):
    """Reads a safetensors file into (dict name -> numpy array, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    types = {"F32": "<f4", "I32": "<i4", "I64": "<i8", "U8": "u1", "F64": "<f8"}
    for name, e in header.items():
        b, en = e["data_offsets"]
        out[name] = np.frombuffer(raw[base + b:base + en],
                                  dtype=types[e["dtype"]]).reshape(e["shape"])
    return out, meta
