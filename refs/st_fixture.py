"""Writes tests/fixtures/st_python.safetensors with refs/fixture.py's writer.

The file is committed (it is 600-odd bytes) so the C test can check that soma
reads what Python writes without needing Python at test time.  Its content
is chosen to exercise the reader: I32 and F32 tensors, a scalar, a zero-size
tensor, names that Python's json escapes as \\uXXXX (one of them a UTF-16
surrogate pair) and metadata with characters that must be escaped.  The
values are exact in float32, so tests/test_safetensors.c can compare them
with ==.

Run: /usr/bin/python3 refs/st_fixture.py [OUT]   (stdlib + numpy only)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import fixture  # noqa: E402


def tensors():
    return {
        "weight": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1.0,
        "labels": np.array([3, -1, 7, 2147483647], dtype=np.int64),
        "scalar": np.float32(3.25),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "caf\u00e9": np.array([1.5], dtype=np.float32),
        "smile\U0001F600": np.array([[2]], dtype=np.int32),
        "conv.w": (np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2) - 4) / 4,
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "..", "tests", "fixtures", "st_python.safetensors")
    fixture.write(out, tensors(),
                  meta={"seed": 7, "note": 'tab\there "quoted" \u00fcber'})
    back, meta = fixture.read(out)
    assert set(back) == set(tensors()), "round trip lost a tensor"
    print("wrote", out)


if __name__ == "__main__":
    main()
