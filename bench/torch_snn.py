"""The same benchmarks as bench_bptt.c in PyTorch: spiking nets trained with
BPTT through a hand-written LIF loop (no snnTorch), autograd for the
gradients, torch.optim.Adam (lr 1e-3), cross-entropy.  Prints one line in
bench_bptt's format.

Per step t, elementwise, every state starting at 0 (soma's equations):
  I_t = x_t W^T + b [+ s_{t-1} R^T]      (R: recurrent weight, r512 only)
  v_t = alpha u_{t-1} + I_t               alpha 0.9
  s_t = H(v_t - th)                       th 1, H(0) = 0; dH/dx := 1/(25|x| + 1)^2
  u_t = v_t - th s_t                      reset by subtraction, not detached
  o_t = alpha o_{t-1} + s_t W_o^T + b_o   leaky-integrator readout, alpha 0.9
  scores = mean_t o_t
MNIST is kept as bytes and each batch is normalised when drawn, as soma's
loader does.

Direct encoding feeds the same image at every step.  variant "loop" (the
default) computes the input layer x W^T + b inside the time loop, as snnTorch's
tutorials and most hand-written SNN code do; variant "hoist" computes it once
per sequence and lets autograd sum its gradient over the steps, which is what
soma does for a stateless prefix under direct encoding (soma_net_set_static_input).

usage: /usr/bin/python3 bench/torch_snn.py mlp|smnist THREADS STEPS [REPEATS] [BATCH] [loop|hoist]
       /usr/bin/python3 bench/torch_snn.py rss T [HIDDEN] [BATCH] [THREADS]
  mlp     784-1000-10, direct encoding, T = 25, batch 128 by default
  smnist  1-r512-10, one pixel per step, T = 784, batch 32 by default
  rss     1-rH-10 (H 512), batch 32: one training step over T steps of random
          inputs (after a T = 1 warm-up step, which sets the baseline); run
          each T in a fresh process
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_common import (Shuffle, cur_rss_mib, heaviside_spike, load_mnist, mnist_normalize,
                          peak_rss_mib, sort_median, timed)

ALPHA, THRESHOLD, SLOPE, READOUT_ALPHA = 0.9, 1.0, 25.0, 0.9


spike = heaviside_spike(lambda g, x: g / (SLOPE * x.abs() + 1.0) ** 2,
                        "Forward: strict Heaviside (x > 0).  Backward: g / (slope |x| + 1)^2.")


class SNN(nn.Module):
    """inputs -> LIF hidden layer (optionally recurrent) -> LI readout."""

    def __init__(self, inputs, hidden, outputs, recurrent):
        super().__init__()
        self.fc = nn.Linear(inputs, hidden)
        self.rec = nn.Linear(hidden, hidden, bias=False) if recurrent else None
        self.out = nn.Linear(hidden, outputs)

    def forward(self, x, T, sequential, hoist=False):
        B = x.shape[0]
        H, C = self.fc.out_features, self.out.out_features
        u = x.new_zeros(B, H)
        s = x.new_zeros(B, H)
        o = x.new_zeros(B, C)
        acc = x.new_zeros(B, C)
        i_static = self.fc(x) if hoist else None
        for t in range(T):
            if hoist:
                i = i_static
            else:
                i = self.fc(x[:, t:t + 1] if sequential else x)
            if self.rec is not None:
                i = i + self.rec(s)
            v = ALPHA * u + i
            s = spike(v - THRESHOLD)
            u = v - THRESHOLD * s
            o = READOUT_ALPHA * o + self.out(s)
            acc = acc + o
        return acc / T


def train_step(model, opt, xb, yb, T, sequential, hoist=False):
    opt.zero_grad()
    loss = F.cross_entropy(model(xb, T, sequential, hoist), yb)
    loss.backward()
    opt.step()
    return loss.item()


def bench_mnist(mode, argv):
    smnist = mode == "smnist"
    threads, steps = int(argv[0]), int(argv[1])
    repeats = int(argv[2]) if len(argv) > 2 else 3
    B = int(argv[3]) if len(argv) > 3 else (32 if smnist else 128)
    variant = argv[4] if len(argv) > 4 else "loop"
    if variant not in ("loop", "hoist") or (smnist and variant == "hoist"):
        print("torch_snn.py: variant must be loop or hoist (hoist: mlp only)", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(threads)
    x, y = load_mnist()
    torch.manual_seed(0)
    if smnist:
        spec, T, model = "1-r512-10", 784, SNN(1, 512, 10, True)
    else:
        spec, T, model = "784-1000-10", 25, SNN(784, 1000, 10, False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = Shuffle(x.shape[0], B)

    def step():
        idx = batches.next()
        return train_step(model, opt, mnist_normalize(x[idx]), y[idx], T, smnist, variant == "hoist")

    times = []
    for r in range(-1, repeats):  # r = -1: one warm-up step
        t, loss = timed(step, 1 if r < 0 else steps)
        if r >= 0:
            times.append(t)
    step_s = sort_median(times)
    print(f"torch {mode} variant={variant} net={spec} batch={B} T={T} threads={threads} steps={steps} "
          f"repeats={repeats} step_ms={step_s * 1e3:.3f} ms_per_sample={step_s * 1e3 / B:.3f} "
          f"samples_per_s={B / step_s:.1f} peak_rss_mib={peak_rss_mib():.1f} loss={loss:.4f} "
          f"torch={torch.__version__}")


def bench_rss(argv):
    T = int(argv[0])
    H = int(argv[1]) if len(argv) > 1 else 512
    B = int(argv[2]) if len(argv) > 2 else 32
    threads = int(argv[3]) if len(argv) > 3 else 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SNN(1, H, 10, True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x = 2.0 * torch.randn(B, T, generator=g)
    y = torch.randint(0, 10, (B,), generator=g)
    # warm-up at T = 1: autograd, BLAS and Adam's state set up before the
    # baseline, so the delta is what grows with T
    train_step(model, opt, x[:, :1], y, 1, True)
    base = cur_rss_mib()
    step_s, _ = timed(train_step, 1, model, opt, x, y, T, True)
    peak = peak_rss_mib()
    print(f"torch rss net=1-r{H}-10 batch={B} T={T} threads={threads} step_ms={step_s * 1e3:.1f} "
          f"base_rss_mib={base:.1f} peak_rss_mib={peak:.1f} delta_rss_mib={peak - base:.1f} "
          f"torch={torch.__version__}")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("mlp", "smnist", "rss"):
        print("usage: torch_snn.py mlp|smnist THREADS STEPS [REPEATS] [BATCH] [loop|hoist]\n"
              "       torch_snn.py rss T [HIDDEN] [BATCH] [THREADS]", file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "rss":
        bench_rss(sys.argv[2:])
    else:
        bench_mnist(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main()
