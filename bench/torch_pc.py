"""The same benchmark as bench_pc.c in PyTorch: predictive coding (SeqIL and
standard IL, T = 3, gamma 0.05, soft clamp beta 100) and BP on the MLP
3072-1024-1024-1024-10 (ReLU, batch 64), CIFAR-10 pixels in [0,1] (the
first training batch file, data/cifar10/data_batch_1.bin[.xz]; random inputs
of CIFAR shape if it is missing: data=random in the output).

PC is written from the equations in docs/pc.md under torch.no_grad with
explicit matmuls, as the authors' IL.py does, and with soma's schedule of
multiplies (the predictions are cached through a sweep, p_1 = W_0 x is kept:
26 multiplies per iteration for L = 4, as soma counts), so both sides do the
same work:
  states h_l (pre-activations) from a feedforward pass, p_l = W f(h_{l-1}) + b
  (no f on x), e_l = h_l - p_l, soft clamp h_L = (softmax(p_L) + beta y)/(1+beta)
  with e_L = h_L - softmax(p_L), recomputed after every iteration;
  SeqIL: l = L-1..1, e_{l+1} from the just-updated h_{l+1};  IL: one snapshot;
  h_l += gamma/(1+t) (f'(h_l) * (e_{l+1} W_l) - e_l);
  then dW_{l-1} = -e_l^T f(h_{l-1}) / B, db = -mean e_l, one optimizer step:
  SGD (w -= lr g), MQ (hand-written, one scalar v per layer: src/optim/mq.c),
  or torch.optim.Adam fed g as .grad.
BP: nn.Linear MLP, autograd, cross-entropy, torch.optim.SGD / Adam.

Variants, timing (interleaved repeats after a warm-up, median) and output
lines follow bench_pc.c.  usage: /usr/bin/python3 bench/torch_pc.py THREADS STEPS REPEATS
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_common import Shuffle, cur_rss_mib, load_cifar, peak_rss_mib, sort_median, timed

B = 64
T = 3
GAMMA = 0.05
BETA = 100.0
WARMUP = 3
SIZES = [3072, 1024, 1024, 1024, 10]


def make_mlp():
    torch.manual_seed(0)
    layers = []
    for i in range(len(SIZES) - 1):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(SIZES[i], SIZES[i + 1]))
    return nn.Sequential(*layers)


class Variant:
    """One model + optimizer + its own shuffled stream of batches."""

    def __init__(self, name, data):
        self.name = name
        self.x, self.y = data
        self.batches = Shuffle(self.x.shape[0], B, torch.Generator().manual_seed(0))
        self.model = make_mlp()
        self.lin = [m for m in self.model if isinstance(m, nn.Linear)]
        self.loss = 0.0
        kind, self.opt_name = name.split("-")
        self.pc = kind != "bp"
        self.sequential = kind == "seqil"
        params = list(self.model.parameters())
        self.lr = {"bp-sgd": 0.01, "bp-adam": 1.8e-5, "seqil-sgd": 1e-3, "seqil-mq": 3e-5,
                   "seqil-adam": 3e-5, "il-sgd": 1e-3}[name]
        if self.opt_name == "adam":
            self.opt = torch.optim.Adam(params, lr=self.lr)
        elif self.opt_name == "sgd" and not self.pc:
            self.opt = torch.optim.SGD(params, lr=self.lr)
        else:
            self.opt = None
        if self.opt_name == "mq":
            # one v per layer (W and b pooled), initialised to lr as IL.py does
            self.mq_v = torch.full((len(self.lin),), self.lr, dtype=torch.float32)
            self.mq_n = 0

    def batch(self):
        idx = self.batches.next()
        return self.x[idx], self.y[idx]

    def optim_state_bytes(self):
        if self.opt_name == "mq":
            return self.mq_v.numel() * self.mq_v.element_size()
        if self.opt is None:
            return 0
        return sum(t.numel() * t.element_size() for st in self.opt.state.values()
                   for t in st.values() if torch.is_tensor(t))

    def step(self):
        xb, yb = self.batch()
        if not self.pc:
            self.opt.zero_grad()
            loss = F.cross_entropy(self.model(xb), yb)
            loss.backward()
            self.opt.step()
            self.loss = loss.item()
            return
        with torch.no_grad():
            self.pc_step(xb, yb)

    def pc_step(self, x, y):
        W = [m.weight for m in self.lin]   # W[l-1]: block l, (out, in)
        bias = [m.bias for m in self.lin]
        L = len(W)
        yh = F.one_hot(y, SIZES[-1]).to(x.dtype)
        a = [None] * (L + 1)   # a[l]: input of block l, x or f(h_{l-1})
        h = [None] * (L + 1)
        p = [None] * (L + 1)
        e = [None] * (L + 1)

        def predict(l):
            a[l] = x if l == 1 else torch.relu(h[l - 1])
            p[l] = torch.addmm(bias[l - 1], a[l], W[l - 1].t())

        def errors():
            for l in range(1, L):
                e[l] = h[l] - p[l]
            s = torch.softmax(p[L], dim=1)
            h[L] = (s + BETA * yh) / (1.0 + BETA)
            e[L] = h[L] - s

        def vjp(l):
            # VJP of block l+1 at h_l with cotangent e_{l+1}: f'(h_l) * (e_{l+1} W_l)
            return torch.mm(e[l + 1], W[l]).mul_(h[l] > 0)

        for l in range(1, L + 1):   # feedforward initialisation h_l = p_l
            predict(l)
            h[l] = p[l].clone()
        errors()
        self.loss = F.cross_entropy(p[L], y).item()   # soma scores the feedforward logits too
        for t in range(T):
            g = GAMMA / (1.0 + t)
            if self.sequential:
                for l in range(L - 1, 0, -1):
                    if l < L - 1:
                        e[l + 1] = h[l + 1] - p[l + 1]   # h_{l+1} just updated
                    h[l].add_(vjp(l).sub_(e[l]), alpha=g)
            else:
                for l in range(1, L):   # every e from the snapshot
                    h[l].add_(vjp(l).sub_(e[l]), alpha=g)
            for l in range(2, L + 1):   # p_1 = W_0 x is unchanged
                predict(l)
            errors()
        # -dF/dtheta from the final errors, then the optimizer
        gw = [torch.mm(e[l].t(), a[l]).mul_(-1.0 / B) for l in range(1, L + 1)]
        gb = [e[l].mean(0).neg_() for l in range(1, L + 1)]
        if self.opt_name == "sgd":
            for k in range(L):
                W[k].add_(gw[k], alpha=-self.lr)
                bias[k].add_(gb[k], alpha=-self.lr)
        elif self.opt_name == "mq":
            self.mq_n += 1
            rho = min(self.mq_n / (self.mq_n + 1.0), 0.9999)
            for k in range(L):
                v = self.mq_v[k]
                step = self.lr / (v + 1e-6) + 1e-3
                W[k].sub_(gw[k] * step)
                bias[k].sub_(gb[k] * step)
                m = (gw[k].abs().sum(dtype=torch.float64) + gb[k].abs().sum(dtype=torch.float64)) \
                    / (gw[k].numel() + gb[k].numel())
                self.mq_v[k] = rho * v + (1.0 - rho) * m.float()
        else:
            for k in range(L):
                W[k].grad, bias[k].grad = gw[k], gb[k]
            self.opt.step()


def main():
    threads, steps, repeats = (int(a) for a in sys.argv[1:4])
    torch.set_num_threads(threads)
    x, y, source = load_cifar()
    names = ["bp-sgd", "bp-adam", "seqil-sgd", "seqil-mq", "seqil-adam", "il-sgd"]
    vs = []
    for name in names:
        r0 = cur_rss_mib()
        v = Variant(name, (x, y))
        for _ in range(WARMUP):
            v.step()
        v.rss = cur_rss_mib() - r0
        v.times = []
        vs.append(v)
    for _ in range(repeats):   # interleaved, as bench_pc.c
        for v in vs:
            v.times.append(timed(v.step, steps)[0])
    peak = peak_rss_mib()
    for v in vs:
        step_s = sort_median(v.times)
        print(f"torch pc variant={v.name} T={T if v.pc else 0} batch={B} threads={threads} "
              f"steps={steps} repeats={repeats} step_ms={step_s * 1e3:.3f} min_ms={v.times[0] * 1e3:.3f} "
              f"samples_per_s={B / step_s:.1f} optim_state_bytes={v.optim_state_bytes()} "
              f"rss_mib={v.rss:.1f} peak_rss_mib={peak:.1f} loss={v.loss:.4f} data={source} "
              f"torch={torch.__version__}")


if __name__ == "__main__":
    main()
