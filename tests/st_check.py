#!/usr/bin/env python3
"""st_check.py - validate a safetensors file by the rules soma's reader enforces.

An independent second reader: the test suite runs it on checkpoints that
soma writes, so a writer bug cannot hide behind a matching reader bug.

Usage:
  python3 tests/st_check.py FILE [--expect NAME:SHAPE ...] [--finite] [--quiet]

  --expect NAME:SHAPE  the tensor NAME must exist with this shape; SHAPE is
                       the dimensions joined by 'x' or ',' ("512x784", "10"),
                       or "" / "[]" for a scalar.  NAME may itself contain ':'
                       (the last ':' separates the shape).  Repeatable.
  --finite             every F32/F64 value must be finite (no NaN or Inf).
  --quiet              print nothing on success.

Prints "name dtype shape" per tensor and the metadata, then an "OK" line.
Exit status: 0 valid, 1 invalid or an --expect not met, 2 usage error.
Standard library only; numpy is used for --finite when it is installed.

Rules (those of the safetensors reference implementation, as in
src/io/safetensors.c): 8-byte little-endian header length N with
N <= size - 8 and N <= 100 MiB; the header is a UTF-8 JSON object without
duplicate keys; "__metadata__", if present, maps strings to strings; every
other entry has exactly dtype (F32, I32, I64, U8, F64), shape (at most 4
non-negative integers) and data_offsets [begin, end] with
end - begin == prod(shape) * sizeof(dtype); sorted by offset, the tensors
cover the data region exactly (no gap, no overlap, no trailing bytes).
"""
import argparse
import json
import math
import struct
import sys

MAX_HEADER = 100 << 20
MAX_DIMS = 4
DTYPES = {"F32": 4, "I32": 4, "I64": 8, "U8": 1, "F64": 8}


class Invalid(Exception):
    pass


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise Invalid("duplicate key %r in the header" % k)
        out[k] = v
    return out


def _no_constants(name):
    raise Invalid("%s is not valid JSON" % name)


def _utf8(s, what):
    # json.loads accepts lone surrogates ("\ud800"); they are not UTF-8.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("%s %r is not valid Unicode (lone surrogate)" % (what, s))
    if "\0" in s:
        raise Invalid("%s %r contains a NUL character" % (what, s))


def _nonneg_int(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse(raw):
    """Returns (tensors, metadata, data_start); tensors maps name ->
    (dtype, shape, begin, end).  Raises Invalid."""
    if len(raw) < 8:
        raise Invalid("truncated: %d bytes, a safetensors file starts with an "
                      "8-byte header length" % len(raw))
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise Invalid("header length %d is larger than the %d bytes that follow it"
                      % (n, len(raw) - 8))
    if n > MAX_HEADER:
        raise Invalid("header length %d is over the 100 MiB limit" % n)
    try:
        text = raw[8:8 + n].decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise Invalid("header is not valid UTF-8: %s" % e)
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates,
                            parse_constant=_no_constants)
    except (ValueError, RecursionError) as e:
        raise Invalid("header is not valid JSON: %s" % e)
    if not isinstance(header, dict):
        raise Invalid("the header is a JSON %s, expected an object" % type(header).__name__)
    data_len = len(raw) - 8 - n

    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict):
        raise Invalid("__metadata__ is not an object")
    for k, v in meta.items():
        _utf8(k, "__metadata__ key")
        if not isinstance(v, str):
            raise Invalid("__metadata__ value for key %r is a %s, not a string"
                          % (k, type(v).__name__))
        _utf8(v, "__metadata__ value")

    tensors = {}
    for name, e in header.items():
        _utf8(name, "tensor name")
        where = "tensor %r" % name
        if not isinstance(e, dict):
            raise Invalid("%s: entry is not an object" % where)
        extra = set(e) - {"dtype", "shape", "data_offsets"}
        if extra:
            raise Invalid("%s: unknown field(s) %s" % (where, sorted(extra)))
        for field in ("dtype", "shape", "data_offsets"):
            if field not in e:
                raise Invalid("%s: missing %r" % (where, field))
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt not in DTYPES:
            raise Invalid("%s: unknown dtype %r (soma reads %s)"
                          % (where, dt, ", ".join(DTYPES)))
        if not isinstance(shape, list) or not all(_nonneg_int(d) for d in shape):
            raise Invalid("%s: shape %r is not a list of non-negative integers" % (where, shape))
        if len(shape) > MAX_DIMS:
            raise Invalid("%s: %d dimensions, soma supports at most %d"
                          % (where, len(shape), MAX_DIMS))
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(_nonneg_int(o) for o in offs)):
            raise Invalid("%s: data_offsets %r is not two non-negative integers" % (where, offs))
        begin, end = offs
        if begin > end:
            raise Invalid("%s: data_offsets %r end before they begin" % (where, offs))
        if end > data_len:
            raise Invalid("%s: data_offsets %r out of range: the data region has %d bytes"
                          % (where, offs, data_len))
        need = math.prod(shape) * DTYPES[dt]
        if need >= 2 ** 63:
            raise Invalid("%s: shape %r overflows" % (where, shape))
        if end - begin != need:
            raise Invalid("%s: data_offsets %r hold %d bytes, but shape %r of %s needs %d"
                          % (where, offs, end - begin, shape, dt, need))
        tensors[name] = (dt, shape, begin, end)

    covered, prev = 0, None
    for name, (dt, shape, begin, end) in sorted(tensors.items(),
                                                key=lambda kv: (kv[1][2], kv[1][3])):
        if begin < covered:
            raise Invalid("tensors %r and %r overlap in the data region" % (prev, name))
        if begin > covered:
            raise Invalid("gap in the data region: bytes [%d, %d) belong to no tensor"
                          % (covered, begin))
        covered, prev = end, name
    if covered != data_len:
        raise Invalid("gap in the data region: trailing bytes [%d, %d) belong to no tensor"
                      % (covered, data_len))
    return tensors, meta, 8 + n


def count_nonfinite(buf, dt):
    """Number of NaN/Inf values in little-endian float data."""
    try:
        import numpy as np
        a = np.frombuffer(buf, dtype="<f4" if dt == "F32" else "<f8")
        return int(a.size - np.count_nonzero(np.isfinite(a)))
    except ImportError:
        fmt, size = ("<f", 4) if dt == "F32" else ("<d", 8)
        return sum(1 for (x,) in struct.iter_unpack(fmt, buf) if not math.isfinite(x)) \
            if len(buf) % size == 0 else 0


def parse_expect(spec):
    if ":" not in spec:
        raise argparse.ArgumentTypeError("--expect wants NAME:SHAPE, got %r" % spec)
    name, shape = spec.rsplit(":", 1)
    shape = shape.strip().strip("[]()").replace(",", "x").replace(" ", "")
    try:
        dims = [int(d) for d in shape.split("x")] if shape else []
    except ValueError:
        raise argparse.ArgumentTypeError("bad shape in --expect %r" % spec)
    return name, dims


def main(argv):
    ap = argparse.ArgumentParser(description="Validate a safetensors file.")
    ap.add_argument("file")
    ap.add_argument("--expect", action="append", default=[], type=parse_expect,
                    metavar="NAME:SHAPE")
    ap.add_argument("--finite", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    try:
        with open(args.file, "rb") as f:
            raw = f.read()
    except OSError as e:
        print("st_check: %s: cannot read: %s" % (args.file, e.strerror), file=sys.stderr)
        return 1
    try:
        tensors, meta, start = parse(raw)
    except Invalid as e:
        print("st_check: %s: %s" % (args.file, e), file=sys.stderr)
        return 1

    problems = []
    for name, dims in args.expect:
        if name not in tensors:
            problems.append("expected tensor %r is missing" % name)
        elif tensors[name][1] != dims:
            problems.append("tensor %r has shape %s, expected %s"
                            % (name, tensors[name][1], dims))
    if args.finite:
        for name, (dt, shape, begin, end) in sorted(tensors.items()):
            if dt in ("F32", "F64"):
                bad = count_nonfinite(raw[start + begin:start + end], dt)
                if bad:
                    problems.append("tensor %r has %d NaN/Inf values" % (name, bad))

    if not args.quiet or problems:
        for name, (dt, shape, begin, end) in sorted(tensors.items()):
            print("%s %s %s" % (name, dt, "x".join(map(str, shape)) or "scalar"))
        for k in sorted(meta):
            print("meta %s = %r" % (k, meta[k]))
    for p in problems:
        print("st_check: %s: %s" % (args.file, p), file=sys.stderr)
    if problems:
        return 1
    if not args.quiet:
        print("OK %s: %d tensors, %d data bytes, %d metadata keys"
              % (args.file, len(tensors), len(raw) - start, len(meta)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
