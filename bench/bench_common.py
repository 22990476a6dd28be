"""Helpers shared by the bench/torch_*.py scripts: MNIST (IDX) and CIFAR-10
loading, shuffled batch indices, timing and medians, resident-set sizes,
safetensors reading for the --check modes, and the Heaviside spike with a
surrogate gradient.

The scripts run as `/usr/bin/python3 bench/torch_X.py` from the repository
root; Python puts the script's folder (bench/) first on sys.path, so a plain
`import bench_common` finds this file.
"""
import json
import lzma
import os
import resource
import struct
import time

import numpy as np
import torch

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


# ---- data -----------------------------------------------------------------------

def load_idx(path):
    """An IDX file (MNIST's format) as a uint8 array of its shape."""
    raw = open(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(root="data/mnist"):
    """MNIST's training set kept as bytes: x (60000, 784) uint8, y (60000,) int64."""
    x = torch.from_numpy(load_idx(os.path.join(root, "train-images-idx3-ubyte")).reshape(-1, 784).copy())
    y = torch.from_numpy(load_idx(os.path.join(root, "train-labels-idx1-ubyte")).astype(np.int64))
    return x, y


def mnist_normalize(xb):
    """A batch of MNIST bytes normalised as soma's loader does (mean/std)."""
    return (xb.float() / 255.0 - MNIST_MEAN) / MNIST_STD


def load_cifar():
    """(x (n, 3072) float32 in [0,1], y (n,) int64, source) from the first batch file."""
    for name in ("data/cifar10/data_batch_1.bin", "data/cifar10/data_batch_1.bin.xz"):
        if os.path.exists(name):
            raw = open(name, "rb").read()
            if name.endswith(".xz"):
                raw = lzma.decompress(raw)
            rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
            x = torch.from_numpy((rec[:, 1:] / 255.0).astype(np.float32))
            y = torch.from_numpy(rec[:, 0].astype(np.int64))
            return x, y, "cifar10"
    g = torch.Generator().manual_seed(0)
    return torch.rand(10000, 3072, generator=g), torch.randint(0, 10, (10000,), generator=g), "random"


class Shuffle:
    """Batches of B indices of a random permutation of range(n), a fresh
    permutation when fewer than B are left (drop-last, as soma's loader);
    from torch's global generator unless one is given."""

    def __init__(self, n, B, generator=None):
        self.n, self.B, self.gen = n, B, generator
        self.perm, self.pos = torch.randperm(n, generator=generator), 0

    def next(self):
        if self.pos + self.B > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos:self.pos + self.B]
        self.pos += self.B
        return idx


# ---- timing and memory ------------------------------------------------------------

# BENCH_CLOCK=cpu (or the older IDE_CLOCK=cpu): the process's CPU time, as bench_util.h's
# bench_clock_s; on a loaded machine the wall clock also counts the other processes' turns,
# at one thread the CPU clock does not
CPU_CLOCK = "cpu" in (os.environ.get("BENCH_CLOCK"), os.environ.get("IDE_CLOCK"))
clock = time.process_time if CPU_CLOCK else time.perf_counter
CLOCK_NAME = "cpu" if CPU_CLOCK else "wall"


def timed(fn, n, *args):
    """(seconds per call, the last call's result) of n calls fn(*args), on `clock`."""
    out = None
    t0 = clock()
    for _ in range(n):
        out = fn(*args)
    return (clock() - t0) / n, out


def sort_median(times):
    """Sorts times in place (times[0] is then the fastest) and returns the median."""
    times.sort()
    return times[len(times) // 2]


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cur_rss_mib():
    """Resident set now (not the peak), from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / (1024.0 * 1024.0)


# ---- --check modes -----------------------------------------------------------------

def read_safetensors(path):
    """({name: numpy array}, metadata dict) of a safetensors file."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    dt = {"F32": np.float32, "I32": np.int32, "F64": np.float64, "I64": np.int64, "U8": np.uint8}
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dt[h["dtype"]]).reshape(h["shape"]).copy()
    return out, meta


def rel_err(a, b):
    """Relative L2 error |a - b| / |b| of two tensors."""
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ---- spiking ---------------------------------------------------------------------

def heaviside_spike(backward, doc=None):
    """A spike function: forward the strict Heaviside (x > 0), backward
    backward(g, x), the incoming gradient times the surrogate at x."""

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return backward(g, x)

    Spike.__doc__ = doc
    return Spike.apply
