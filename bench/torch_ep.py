"""The same benchmark as bench_ep.c in plain PyTorch: equilibrium propagation
for general (untied) dynamics (Scellier, Goyal, Binas, Mesnard, Bengio 2018)
on the MLP 784-512-512-10 at batch 20, MNIST pixels in [0,1], written from the
equations in the header of src/rule/ep.c (docs/ep.md) under torch.no_grad with
explicit matmuls, as the authors' Theano/PyTorch code does.  No autograd.

States s_1..s_3 (s_3 the output, loss mse), input x clamped, rho = hard
sigmoid clamp(., 0, 1), W_k (n_k, n_{k-1}), b_k, feedback F_{k+1} (n_k, n_{k+1})
without bias:
  mu_k = W_k rho(s_{k-1}) + b_k + F_{k+1} rho(s_{k+1}) - s_k   (no F term on top)
  nudged: mu_3 += beta (y - s_3)        (C = 1/2 |y - s_3|^2, y one-hot)
  Euler, synchronous, clipped:  s <- clip(s + eps mu, 0, 1),  rho(s_0) = rho(x)
Free phase from zeros for FREE steps (s0), nudged phase from s0 for NUDGE steps
with +beta (s+), and with symmetric nudging a second one with -beta from s0
(s-).  D = (s+ - s0)/beta, or (s+ - s-)/(2 beta); eq. 56, batch means,
presynaptic activity at the free point:
  dW_k = D_k^T rho(s0_{k-1}) / B,  db_k = mean D_k,  dF_{k+1} = D_k^T rho(s0_{k+1}) / B
and plain SGD p += lr * lr_k * d (lr 1, lr_k = 0.4, 0.1, 0.01; F_{k+1} takes
lr_{k+1}).  The schedule of products is soma's (bench_ep.c's header): 5 per
Euler step, W_1 rho(x) recomputed every step as soma does, 5 for the update.
Variants as bench_ep.c: general (random F, one-sided, 200 / 100 steps, beta 1)
and fast (the same with 60 / 20 steps), Xavier
uniform weights, zero biases; timing (one warm-up batch, interleaved repeats,
median of REPEATS repeats of STEPS batches, batch drawing included) and the
output line follow bench_ep.c.

usage: /usr/bin/python3 bench/torch_ep.py THREADS STEPS REPEATS [FREE NUDGE]
       /usr/bin/python3 bench/torch_ep.py --check [BUILD]
  --check  runs BUILD/bench/bench_ep check (BUILD default build/rel) for both
           variants: soma's initial weights, its first unshuffled training
           batch, its end states of every phase and its grad store and weights
           after one training batch.  From the same weights and batch this
           file's EP runs in float64 (the reference) and float32; it compares
           soma's states s0, s+ (s-) per layer and its update per tensor (the
           grad store, -lr_k * update) with the float64 pass, relative L2
           error, and its weights after the batch with w - lr * g in float32
           (within one unit in the last place).
           The tolerance is 10x the float32 pass's own error (+1e-5, at most
           1e-3).  A negative control, the update with presynaptic activity
           at the nudged point instead of the free one (pitfall 12 of the
           notes), must miss soma's update by more than 10x the tolerance on
           the tensors it changes.  Exit 1 on any failure.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

from bench_common import Shuffle, load_mnist, peak_rss_mib, read_safetensors, rel_err, sort_median, timed

SIZES = [784, 512, 512, 10]
B = 20
EPS = 0.5
LRS = [0.4, 0.1, 0.01]
LR = 1.0
VARIANTS = {
    "general": dict(fb="random", symmetric=False, free=200, nudge=100, beta=1.0),
    "fast": dict(fb="random", symmetric=False, free=60, nudge=20, beta=1.0),
}


def rho(s):
    return s.clamp(0.0, 1.0)


class Params:
    """W[k], b[k] of dense layer k+1 (0-based lists); F[k] (n_{k-1}, n_k) for
    k = 1..L-1, the feedback into state k-1 from state k (F[0] is None)."""

    def __init__(self, W, b, F):
        self.W, self.b, self.F = W, b, F

    def tensors(self):
        return self.W + self.b + [f for f in self.F if f is not None]


def init_params(fb, seed=0):
    torch.manual_seed(seed)
    W, b, F = [], [], [None]
    for k in range(1, len(SIZES)):
        w = torch.empty(SIZES[k], SIZES[k - 1])
        torch.nn.init.xavier_uniform_(w)
        W.append(w)
        b.append(torch.zeros(SIZES[k]))
    for k in range(1, len(W)):
        if fb == "transpose":
            F.append(W[k].t().contiguous())
        else:
            f = torch.empty(SIZES[k], SIZES[k + 1])
            torch.nn.init.xavier_uniform_(f)
            F.append(f)
    return Params(W, b, F)


def ep_step(P, rx, s, beta, onehot, eps, d1=None):
    """One synchronous clipped Euler step: a new list of states.  d1: the
    input layer's drive W_1 rho(x) + b_1 formed once per batch (soma does),
    else recomputed every step (as the papers' code)."""
    L = len(s)
    r = [rx] + [rho(sk) for sk in s]
    out = []
    for k in range(L):
        if k == 0 and d1 is not None:
            a = d1.clone()
        else:
            a = torch.addmm(P.b[k], r[k], P.W[k].t())    # W_k rho(s_{k-1}) + b_k
        if k + 1 < L:
            a.addmm_(r[k + 2], P.F[k + 1].t())           # + F_{k+1} rho(s_{k+1})
        elif beta != 0.0:
            a.add_(onehot - s[k], alpha=beta)            # + beta (y - s_out)
        out.append(a.sub_(s[k]).mul_(eps).add_(s[k]).clamp_(0.0, 1.0))
    return out


def relax(P, rx, s, steps, beta, onehot, eps=EPS, d1=None):
    """steps Euler steps from s (None: zeros); the end states and the RMS
    projected |mu| of the last step (as soma's residual)."""
    if s is None:
        s = [rx.new_zeros(rx.shape[0], n) for n in SIZES[1:]]
    res = 0.0
    for t in range(steps):
        new = ep_step(P, rx, s, beta, onehot, eps, d1)
        if t == steps - 1:
            ss = sum(((n - o) / eps).pow(2).sum().item() for n, o in zip(new, s))
            res = (ss / (rx.shape[0] * sum(SIZES[1:]))) ** 0.5
        s = new
    return s, res


def ep_update(rx, s0, sp, sm, beta, lrs, pre_nudged=False):
    """-lr_k * (EP update) per tensor, as soma's grad store: lists gW, gb, gF.
    pre_nudged: the negative control (presynaptic activity at s+)."""
    L = len(s0)
    n = rx.shape[0]
    if sm is not None:
        D = [(a - c) / (2.0 * beta) for a, c in zip(sp, sm)]
    else:
        D = [(a - c) / beta for a, c in zip(sp, s0)]
    pre = [rx] + [rho(s) for s in (sp if pre_nudged else s0)]
    gW, gb, gF = [], [], [None]
    for k in range(L):
        gW.append(torch.mm(D[k].t(), pre[k]).mul_(-lrs[k] / n))
        gb.append(D[k].sum(0).mul_(-lrs[k] / n))
        if k + 1 < L:
            gF.append(torch.mm(D[k].t(), pre[k + 2]).mul_(-lrs[k + 1] / n))
    return gW, gb, gF


def sgd(P, g, lr=LR):
    gW, gb, gF = g
    for k in range(len(P.W)):
        P.W[k].sub_(gW[k], alpha=lr)
        P.b[k].sub_(gb[k], alpha=lr)
        if P.F[k] is not None:
            P.F[k].sub_(gF[k], alpha=lr)


def train_batch(P, x, y, cfg, lrs=LRS, hoist=False):
    """One EP training batch; the free-point mse loss (soma's: mean over
    samples and classes), the free residual, the states and the update."""
    rx = rho(x)
    onehot = torch.zeros(x.shape[0], SIZES[-1], dtype=x.dtype).scatter_(1, y.view(-1, 1), 1.0)
    d1 = torch.addmm(P.b[0], rx, P.W[0].t()) if hoist else None
    s0, res0 = relax(P, rx, None, cfg["free"], 0.0, onehot, d1=d1)
    loss = (s0[-1] - onehot).pow(2).mean().item()
    sp, _ = relax(P, rx, s0, cfg["nudge"], cfg["beta"], onehot, d1=d1)
    sm = relax(P, rx, s0, cfg["nudge"], -cfg["beta"], onehot, d1=d1)[0] if cfg["symmetric"] else None
    g = ep_update(rx, s0, sp, sm, cfg["beta"], lrs)
    sgd(P, g)
    return loss, res0, (s0, sp, sm), g


class Run:
    """One variant: its parameters and its own shuffled stream of batches."""

    def __init__(self, name, cfg, data, hoist):
        self.name, self.cfg, self.hoist = name, cfg, hoist
        self.x, self.y = data
        self.batches = Shuffle(self.x.shape[0], B, torch.Generator().manual_seed(0))
        self.P = init_params(cfg["fb"])
        self.loss, self.res = 0.0, []
        self.times = []

    def step(self):
        idx = self.batches.next()
        xb = self.x[idx].float().div_(255.0)   # as soma's loader: float32 v / 255
        self.loss, res, _, _ = train_batch(self.P, xb, self.y[idx], self.cfg, hoist=self.hoist)
        self.res.append(res)


def bench(argv):
    threads, steps, repeats = (int(a) for a in argv[:3])
    free = int(argv[3]) if len(argv) > 3 else 0
    nudge = int(argv[4]) if len(argv) > 4 else 0
    torch.set_num_threads(threads)
    x, y = load_mnist()
    cfgs = {k: dict(v) for k, v in VARIANTS.items()}
    if free:
        cfgs["general"]["free"] = free
    if nudge:
        cfgs["general"]["nudge"] = nudge
    runs = [Run(name, cfgs[name], (x, y), hoist) for name in ("general", "fast") for hoist in (False, True)]
    with torch.no_grad():
        for r in runs:   # warm-up: one batch each
            r.step()
            r.res = []
        for _ in range(repeats):   # interleaved, as bench_ep.c
            for r in runs:
                r.times.append(timed(r.step, steps)[0])
    peak = peak_rss_mib()
    for r in runs:
        step_s = sort_median(r.times)
        c = r.cfg
        phases = 2 if c["symmetric"] else 1
        print(f"torch ep variant={r.name} impl={'hoist' if r.hoist else 'loop'} net={'-'.join(map(str, SIZES))} batch={B} threads={threads} "
              f"free={c['free']} nudge={c['nudge']} phases={phases} steps={steps} repeats={repeats} "
              f"euler_steps={c['free'] + phases * c['nudge']} step_ms={step_s * 1e3:.3f} "
              f"min_ms={r.times[0] * 1e3:.3f} samples_per_s={B / step_s:.1f} "
              f"res_free={sum(r.res) / len(r.res):.3g} peak_rss_mib={peak:.1f} loss={r.loss:.4f} "
              f"torch={torch.__version__}")


# ---- check ----------------------------------------------------------------------

def check_variant(exe, variant, d):
    path = os.path.join(d, f"ep_check_{variant}.safetensors")
    subprocess.run([exe, "check", path, variant], check=True, stdout=subprocess.DEVNULL)
    ten, meta = read_safetensors(path)
    opts = dict(kv.split("=", 1) for kv in meta["rule_options"].split())
    if opts["ep-variant"] != "general" or float(meta["lr"]) != LR:
        print(f"torch_ep.py --check: expected the general variant with lr {LR}, got "
              f"{opts['ep-variant']} lr {meta['lr']}", file=sys.stderr)
        return False
    cfg = dict(free=int(opts["ep-free"]), nudge=int(opts["ep-nudge"]), beta=float(opts["ep-beta"]),
               symmetric=opts["ep-symmetric"] == "1")
    eps = float(opts["ep-eps"])
    lrs = [float(v) for v in opts["ep-lrs"].split(",")]
    if eps != EPS or len(lrs) != len(SIZES) - 1:
        print(f"torch_ep.py --check: eps {eps}, lrs {lrs}: not this file's setting", file=sys.stderr)
        return False
    # the net's names: dense layer k's "I.weight", "I.bias" and, from the
    # second on, its feedback "I.weight_fb" (F_k)
    names = meta["params"].split(",")
    dense = [nm[:-len(".weight")] for nm in names if nm.endswith(".weight")]
    key_of = {}
    for k, pfx in enumerate(dense):
        key_of[("W", k)], key_of[("b", k)] = pfx + ".weight", pfx + ".bias"
        if k:
            key_of[("F", k)] = pfx + ".weight_fb"
    if len(dense) != len(SIZES) - 1 or sorted(key_of.values()) != sorted(names):
        print(f"torch_ep.py --check: unexpected parameters {names}", file=sys.stderr)
        return False
    L = len(dense)

    def params(prefix, dtype):
        t = lambda key: torch.tensor(ten[prefix + "." + key], dtype=dtype)  # noqa: E731  (a copy)
        return Params([t(key_of[("W", k)]) for k in range(L)], [t(key_of[("b", k)]) for k in range(L)],
                      [None] + [t(key_of[("F", k)]) for k in range(1, L)])

    x = torch.from_numpy(ten["x"])
    y = torch.from_numpy(ten["y"].astype(np.int64))
    soma_states = [[torch.from_numpy(ten[f"{p}.{k + 1}"]).double() for k in range(L)]
                   for p in ("s0", "sp", "sm") if f"{p}.1" in ten]
    soma_g = params("g", torch.float64).tensors()
    # the SGD step itself, in float32 as soma takes it: after = w - lr * g
    # (soma's own grad store), to within one unit in the last place
    sgd_ulp = max(float(np.max(np.abs(a.numpy() - e) / np.spacing(np.abs(e)))) for a, e in
                  zip(params("after", torch.float32).tensors(),
                      [(w - np.float32(LR) * g).numpy() for w, g in
                       zip(params("w", torch.float32).tensors(), params("g", torch.float32).tensors())]))

    def run(dtype, pre_nudged=False):
        P = params("w", dtype)
        with torch.no_grad():
            if pre_nudged:   # the control: the same states, the update from s+
                _, _, (s0, sp, sm), _ = train_batch(P, x.to(dtype), y, cfg, lrs)
                rx = rho(x.to(dtype))
                g = ep_update(rx, s0, sp, sm, cfg["beta"], lrs, pre_nudged=True)
                return None, None, None, Params(*g).tensors()
            loss, res, states, g = train_batch(P, x.to(dtype), y, cfg, lrs)
        return loss, res, [s for s in states if s is not None], Params(*g).tensors()

    loss, res, states, g = run(torch.float64)
    _, _, states32, g32 = run(torch.float32)
    g_ctl = run(torch.float64, pre_nudged=True)[3]
    st_err = [rel_err(a, b) for sa, sb in zip(soma_states, states) for a, b in zip(sa, sb)]
    st_err32 = [rel_err(a.double(), b) for sa, sb in zip(states32, states) for a, b in zip(sa, sb)]
    g_err = [rel_err(a, b) for a, b in zip(soma_g, g)]
    g_err32 = [rel_err(a.double(), b) for a, b in zip(g32, g)]
    changed = [i for i, (a, b) in enumerate(zip(g_ctl, g)) if rel_err(a, b) > 0]
    ctl_err = [rel_err(soma_g[i], g_ctl[i]) for i in changed]
    norms = [t.norm().item() for t in soma_g]
    TOL = min(10 * max(st_err32 + g_err32) + 1e-5, 1e-3)
    ok = (len(soma_states) == len(states) and max(st_err) < TOL and max(g_err) < TOL
          and sgd_ulp <= 1.0 and min(norms) > 0)
    control_fails = bool(changed) and min(ctl_err) > 10 * TOL
    fmt = lambda v: ",".join(f"{e:.1e}" for e in v)  # noqa: E731
    phases = "s0,s+,s-" if cfg["symmetric"] else "s0,s+"
    print(f"torch ep check variant={variant} batch={x.shape[0]} free={cfg['free']} nudge={cfg['nudge']} "
          f"symmetric={int(cfg['symmetric'])} states={phases}x{L} state_rel_err={fmt(st_err)} "
          f"f32_state_rel_err={fmt(st_err32)} update_rel_err={fmt(g_err)} f32_update_rel_err={fmt(g_err32)} "
          f"sgd_step_max_ulp={sgd_ulp:.2g} control_pre_nudged_rel_err={fmt(ctl_err)} tol={TOL:.1e} "
          f"res_free_torch={res:.3g} res_free_soma={float(meta['res_free']):.3g} "
          f"loss_torch={loss:.5f} loss_soma={float(meta['loss']):.5f} "
          f"result={'PASS' if ok and control_fails else 'FAIL'}")
    if not control_fails:
        print(f"torch_ep.py --check ({variant}): the control (presynaptic activity at s+) matches soma "
              "too: the check cannot tell the free point's presynaptic activity apart", file=sys.stderr)
    return ok and control_fails


def check(argv):
    build = argv[0] if argv else "build/rel"
    exe = os.path.join(build, "bench", "bench_ep")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        results = [check_variant(exe, v, d) for v in ("general", "fast")]
    sys.exit(0 if all(results) else 1)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--check":
        check(sys.argv[2:])
    elif len(sys.argv) >= 4 and not sys.argv[1].startswith("-"):
        bench(sys.argv[1:])
    else:
        print("usage: torch_ep.py THREADS STEPS REPEATS [FREE NUDGE]\n"
              "       torch_ep.py --check [BUILD]", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
