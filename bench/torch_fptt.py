"""The same benchmarks as bench_fptt.c in PyTorch: the S-MNIST LTC spiking net
1-rltc256-rltc256-10 with the liquid readout, trained with FPTT K = 1 the way
the authors' code does it (one optimizer step per time step) and with BPTT.
Autograd for the gradients, torch.optim.Adamax (lr 3e-3), global-norm clip 1,
cross-entropy.  Prints lines in bench_fptt's format ("torch fptt-...").
Written from the equations of docs/fptt.md and notes/fptt.md (2.1, 2.5, 2.6),
as soma implements them (the recurrent weight of layer 2 acts on layer 2's own
spikes; no batchnorm; no auxiliary loss).

Per step t, per LTC layer (input x_t: the pixel, or the previous layer's spikes):
  I     = x_t W^T + b + s_{t-1} R^T
  tau_m = sigmoid(k_m ([I, u_{t-1}] W_m^T + b_m));  tau_a = sigmoid(k_a ([I, eta_{t-1}] W_a^T + b_a))
  eta_t = tau_a eta_{t-1} + (1 - tau_a) s_{t-1};    theta = 0.1 + 1.8 eta_t
  v     = (1 - tau_m) u_{t-1} + tau_m I;  s_t = H(v - theta) (strict);  u_t = (1 - s_t) v
readout:  z = s2_t W_o^T + b_o;  tau_o = sigmoid(k_o ([z, o_{t-1}] W_to^T + b_to));
          o_t = (1 - tau_o) o_{t-1} + tau_o z   (the logits)
dH/dx := gamma [(1+h) N(x;0,s) - h N(x;s,6s) - h N(x;-s,6s)], s 0.3, h 0.15, gamma 0.5.
A sequence starts from u ~ U[0,1), eta = 0.1, s = 0, o = 0 (the authors' init).
Init: nn.Linear's default for the synapses, Xavier-normal tau maps, bias 0, k 1.

FPTT K = 1, per step p = 0..T-1 (alpha 0.1, beta 0.5):
  state detached; one step forward; loss = (p+1)/T CE(o_p, y); zero_grad; backward;
  grad += alpha (W - Wbar) - lam for every parameter; clip_grad_norm_(1); Adamax step;
  lam -= alpha (W - Wbar); Wbar = (1 - beta) Wbar + beta W - (beta/alpha) lam.
BPTT: T steps forward, CE on the last step's readout, one backward, clip, Adamax.

Data: a synthetic batch of T random pixels in [0,1) and random labels (as
bench_fptt).  torch.set_num_threads does not reach Debian torch's OpenBLAS:
run with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set (bench/run_fptt.sh does).

usage: /usr/bin/python3 bench/torch_fptt.py speed THREADS STEPS REPEATS [T] [BATCH]
       /usr/bin/python3 bench/torch_fptt.py rss T [fptt|bptt|both] [BATCH]
  speed  FPTT and BPTT, each its own model (same seed) on one fixed batch; one
         warm-up sequence of each, then REPEATS repeats of STEPS sequences,
         interleaved; seq_ms = median time per sequence batch.  Defaults
         T = 100, batch 32 (bench_fptt's).
  rss    one training sequence at T (batch 32) after a T = 1 warm-up sequence,
         which sets the baseline; "both" runs fptt then bptt in this process
         (bptt's baseline is then taken after fptt); run each rule in a fresh
         process for clean peaks.
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_common import CLOCK_NAME, cur_rss_mib, heaviside_spike, peak_rss_mib, sort_median, timed

B0, BETA_A = 0.1, 1.8
SIG, HGT, SCL, GAM = 0.3, 0.15, 6.0, 0.5
LR, CLIP, ALPHA, BETA = 3e-3, 1.0, 0.1, 0.5
HIDDEN, CLASSES = 256, 10
NET = "1-rltc256-rltc256-10"


def gauss(x, mu, sigma):
    return torch.exp(-((x - mu) ** 2) / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)


def multi_gauss(g, x):
    sg = GAM * ((1 + HGT) * gauss(x, 0.0, SIG) - HGT * gauss(x, SIG, SCL * SIG)
                - HGT * gauss(x, -SIG, SCL * SIG))
    return g * sg


spike = heaviside_spike(multi_gauss, "Forward: strict Heaviside (x > 0).  Backward: the multi-Gaussian surrogate.")


class TauMap(nn.Module):
    """tau = sigmoid(k (W [a, b] + bias)), W (n, 2n) Xavier-normal, bias 0, k 1."""

    def __init__(self, n):
        super().__init__()
        self.lin = nn.Linear(2 * n, n)
        nn.init.xavier_normal_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)
        self.k = nn.Parameter(torch.ones(1))

    def forward(self, a, b):
        return torch.sigmoid(self.k * self.lin(torch.cat([a, b], 1)))


class LTCLayer(nn.Module):
    """A dense synapse (+ recurrent weight on its own spikes) feeding LTC cells."""

    def __init__(self, n_in, n):
        super().__init__()
        self.fc = nn.Linear(n_in, n)
        self.rec = nn.Linear(n, n, bias=False)
        self.tau_m = TauMap(n)
        self.tau_adp = TauMap(n)

    def forward(self, x, st):
        u, eta, s = st
        i = self.fc(x) + self.rec(s)
        tm = self.tau_m(i, u)
        ta = self.tau_adp(i, eta)
        eta = ta * eta + (1 - ta) * s
        theta = B0 + BETA_A * eta
        v = (1 - tm) * u + tm * i
        s = spike(v - theta)
        u = (1 - s) * v
        return s, (u, eta, s)


class LTCNet(nn.Module):
    """1-rltc256-rltc256-10 with the liquid readout."""

    def __init__(self):
        super().__init__()
        self.l1 = LTCLayer(1, HIDDEN)
        self.l2 = LTCLayer(HIDDEN, HIDDEN)
        self.out = nn.Linear(HIDDEN, CLASSES)
        self.tau_o = TauMap(CLASSES)

    def init_state(self, B):
        def cell():
            return (torch.rand(B, HIDDEN), torch.full((B, HIDDEN), B0), torch.zeros(B, HIDDEN))
        return (cell(), cell(), torch.zeros(B, CLASSES))

    def step(self, x, st):
        s1, c1 = self.l1(x, st[0])
        s2, c2 = self.l2(s1, st[1])
        z = self.out(s2)
        to = self.tau_o(z, st[2])
        o = (1 - to) * st[2] + to * z
        return o, (c1, c2, o)


def detach(st):
    if isinstance(st, tuple):
        return tuple(detach(a) for a in st)
    return st.detach()


class Trainer:
    def __init__(self, rule):
        torch.manual_seed(0)
        self.rule = rule
        self.model = LTCNet()
        self.params = list(self.model.parameters())
        self.opt = torch.optim.Adamax(self.params, lr=LR)
        # FPTT: Wbar starts as a copy of W, lam at 0
        self.wbar = [p.detach().clone() for p in self.params]
        self.lam = [torch.zeros_like(p) for p in self.params]

    def fptt_sequence(self, x, y):
        T = x.shape[1]
        st = self.model.init_state(x.shape[0])
        loss = None
        for p in range(T):
            st = detach(st)
            out, st = self.model.step(x[:, p:p + 1], st)
            ce = F.cross_entropy(out, y)
            loss = (p + 1) / T * ce
            self.opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                for w, wb, lm in zip(self.params, self.wbar, self.lam):
                    w.grad.add_(w - wb, alpha=ALPHA).sub_(lm)
            torch.nn.utils.clip_grad_norm_(self.params, CLIP)
            self.opt.step()
            with torch.no_grad():
                for w, wb, lm in zip(self.params, self.wbar, self.lam):
                    lm.sub_(w - wb, alpha=ALPHA)                     # old Wbar
                    wb.mul_(1 - BETA).add_(w, alpha=BETA).sub_(lm, alpha=BETA / ALPHA)  # new lam
        return ce.item()

    def bptt_sequence(self, x, y):
        st = self.model.init_state(x.shape[0])
        out = None
        for t in range(x.shape[1]):
            out, st = self.model.step(x[:, t:t + 1], st)
        loss = F.cross_entropy(out, y)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, CLIP)
        self.opt.step()
        return loss.item()

    def sequence(self, x, y):
        return self.fptt_sequence(x, y) if self.rule == "fptt" else self.bptt_sequence(x, y)


def data(B, T):
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, T, generator=g), torch.randint(0, CLASSES, (B,), generator=g)


def bench_speed(argv):
    threads, steps, repeats = int(argv[0]), int(argv[1]), int(argv[2])
    T = int(argv[3]) if len(argv) > 3 else 100
    B = int(argv[4]) if len(argv) > 4 else 32
    torch.set_num_threads(threads)
    which = argv[5] if len(argv) > 5 else "both"   # as bench_fptt: fptt, bptt or both
    if which not in ("fptt", "bptt", "both"):
        sys.exit(f"torch_fptt.py speed: rule {which!r} is not fptt, bptt or both")
    x, y = data(B, T)
    rules = ("fptt", "bptt") if which == "both" else (which,)
    tr = {r: Trainer(r) for r in rules}
    times = {r: [] for r in rules}
    loss = {r: 0.0 for r in rules}
    for rep in range(-1, repeats):  # rep = -1: one warm-up sequence each
        n = 1 if rep < 0 else steps
        for r in rules:
            t, loss[r] = timed(tr[r].sequence, n, x, y)
            if rep >= 0:
                times[r].append(t)
    seq = {}
    for r in rules:
        seq[r] = sort_median(times[r])
        ups = T if r == "fptt" else 1
        print(f"torch fptt-speed rule={r} net={NET} batch={B} T={T} K={1 if r == 'fptt' else T} "
              f"threads={threads} steps={steps} repeats={repeats} seq_ms={seq[r] * 1e3:.3f} "
              f"ms_per_sample={seq[r] * 1e3 / B:.3f} samples_per_s={B / seq[r]:.2f} "
              f"updates_per_seq={ups} ms_per_update={seq[r] * 1e3 / ups:.4f} loss={loss[r]:.4f} "
              f"torch={torch.__version__} clock={CLOCK_NAME}")
    if which == "both":
        print(f"torch fptt-speed ratio=fptt/bptt batch={B} T={T} threads={threads} "
              f"seq_ratio={seq['fptt'] / seq['bptt']:.3f} peak_rss_mib={peak_rss_mib():.1f}")


def bench_rss(argv):
    T = int(argv[0])
    which = argv[1] if len(argv) > 1 else "both"
    B = int(argv[2]) if len(argv) > 2 else 32
    if which not in ("fptt", "bptt", "both"):
        print("torch_fptt.py: rss RULE must be fptt, bptt or both", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    x, y = data(B, T)
    for r in (("fptt", "bptt") if which == "both" else (which,)):
        tr = Trainer(r)
        # warm-up at T = 1: autograd, BLAS and Adamax's state set up before the
        # baseline, so the delta is what the T-step sequence adds
        tr.sequence(x[:, :1], y)
        base = cur_rss_mib()
        seq_s, loss = timed(tr.sequence, 1, x, y)
        peak = peak_rss_mib()
        print(f"torch fptt-rss task=smnist rule={r} net={NET} batch={B} T={T} "
              f"K={1 if r == 'fptt' else T} threads=1 seq_ms={seq_s * 1e3:.1f} "
              f"base_rss_mib={base:.1f} peak_rss_mib={peak:.1f} delta_rss_mib={peak - base:.1f} "
              f"loss={loss:.4f} torch={torch.__version__}")
        sys.stdout.flush()
        del tr


def main():
    # soma's CLI and bench_fptt flush denormals to zero unless SOMA_DENORMALS=1: the same here
    torch.set_flush_denormal(os.environ.get("SOMA_DENORMALS") != "1")
    if len(sys.argv) < 3 or sys.argv[1] not in ("speed", "rss") or \
            (sys.argv[1] == "speed" and len(sys.argv) < 5):
        print("usage: torch_fptt.py speed THREADS STEPS REPEATS [T] [BATCH] [fptt|bptt|both]\n"
              "       torch_fptt.py rss T [fptt|bptt|both] [BATCH]", file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "speed":
        bench_speed(sys.argv[2:])
    else:
        bench_rss(sys.argv[2:])


if __name__ == "__main__":
    main()
