"""The same benchmark as bench_bp.c in PyTorch: MLP 784-512-512-10, ReLU,
SGD momentum 0.9, cross-entropy, MNIST, shuffled batches.  Prints one line in
bench_bp's format.  usage: /usr/bin/python3 bench/torch_mlp.py BATCH THREADS STEPS [REPEATS]
"""
import sys

import numpy as np
import torch
import torch.nn as nn

from bench_common import MNIST_MEAN, MNIST_STD, Shuffle, load_idx, peak_rss_mib, sort_median, timed


def main():
    B, threads, steps = (int(a) for a in sys.argv[1:4])
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    torch.set_num_threads(threads)
    x = load_idx("data/mnist/train-images-idx3-ubyte").reshape(-1, 784)
    y = load_idx("data/mnist/train-labels-idx1-ubyte").astype(np.int64)
    x = torch.from_numpy(((x / 255.0 - MNIST_MEAN) / MNIST_STD).astype(np.float32))
    y = torch.from_numpy(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    lossf = nn.CrossEntropyLoss()
    batches = Shuffle(x.shape[0], B)

    def step():
        idx = batches.next()
        xb, yb = x[idx], y[idx]
        opt.zero_grad()
        loss = lossf(model(xb), yb)
        loss.backward()
        opt.step()

    times = []
    for r in range(-1, repeats):  # r = -1: warm-up
        t, _ = timed(step, steps)
        if r >= 0:
            times.append(t)
    step_s = sort_median(times)
    print(f"torch batch={B} threads={threads} steps={steps} repeats={repeats} "
          f"step_ms={step_s * 1e3:.4f} samples_per_s={B / step_s:.1f} peak_rss_mib={peak_rss_mib():.1f} "
          f"torch={torch.__version__}")


if __name__ == "__main__":
    main()
