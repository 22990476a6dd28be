"""The same benchmark as bench_bp.c in PyTorch: MLP 784-512-512-10, ReLU,
SGD momentum 0.9, cross-entropy, MNIST, shuffled batches.  Prints one line in
bench_bp's format.  usage: /usr/bin/python3 bench/torch_mlp.py BATCH THREADS STEPS [REPEATS]
"""
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn


def load_idx(path):
    raw = open(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    B, threads, steps = (int(a) for a in sys.argv[1:4])
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    torch.set_num_threads(threads)
    x = load_idx("data/mnist/train-images-idx3-ubyte").reshape(-1, 784)
    y = load_idx("data/mnist/train-labels-idx1-ubyte").astype(np.int64)
    x = torch.from_numpy(((x / 255.0 - 0.1307) / 0.3081).astype(np.float32))
    y = torch.from_numpy(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    lossf = nn.CrossEntropyLoss()
    perm = torch.randperm(x.shape[0])
    pos = 0
    times = []
    for r in range(-1, repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            if pos + B > x.shape[0]:
                perm = torch.randperm(x.shape[0])
                pos = 0
            idx = perm[pos:pos + B]
            pos += B
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            loss = lossf(model(xb), yb)
            loss.backward()
            opt.step()
        if r >= 0:
            times.append((time.perf_counter() - t0) / steps)
    times.sort()
    step_s = times[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"torch batch={B} threads={threads} steps={steps} repeats={repeats} "
          f"step_ms={step_s * 1e3:.4f} samples_per_s={B / step_s:.1f} peak_rss_mib={rss:.1f} "
          f"torch={torch.__version__}")


if __name__ == "__main__":
    main()
