"""The same benchmark as bench_ide.c in plain PyTorch: IDE training (Xiao,
Meng, Zhang, Wang, Lin, NeurIPS 2021) of F400 at batch 128, written from
docs/ide.md and shared/notes/ide.md (the authors' code, sections 2.1-2.5):

  F = linear 784 -> 400 (+ bias) + BatchNorm1d (batch statistics in
  training, the running ones updated once per batch, as soma; the authors'
  code updates them twice, notes 2.5), feedback W = linear 400 -> 400
  without bias under the spectral norm W_eff = clamp(alpha, -1, 1) w / sigma,
  sigma = u^T w v after one power iteration per batch (no gradient through
  u, v), readout linear 400 -> 10, cross-entropy.
  1. under torch.no_grad, T steps of LIF 0.95, V_th 2, test u >= V, reset by
     subtraction, then the leak; constant input current F x (computed once,
     with its graph kept for the parameter VJP):
         u += F x (+ W_eff s(t-1) from t = 1);  s = [u >= V];  u = lambda (u - V s)
         a_T = sum_t lambda^(T-1-t) s(t) / sum_{k<T} lambda^k
  2. with grad: the equilibrium map at a_T, f(a) = clamp((W_eff a + F x) / V, 0, 1),
     and z = Replace(f(a_T), a_T) (value a_T, gradient into f(a_T)) feeding
     the readout; a backward hook on z replaces g = dL/da by the solution
     beta of (I - J^T) beta = g, J^T v by torch.autograd.grad through f at
     a_T (retain_graph, as the authors' Backward hook does), solved by
     limited-memory good Broyden (30 iterations, the notes' 27-pair circular
     memory, step 1, best iterate kept, per-sample factors, batch residual)
     with soma's first step +G and its stopping test |G| / |g| <= 1e-6, so
     both sides do the same number of J^T products (iters= says how many);
     beta then flows through f(a_T) into F, the batchnorm, w and alpha.
  3. torch.optim.SGD, lr 0.05, momentum 0.9, weight decay 5e-4 (all parameters).
Initialisation as soma's: F and the readout nn.Linear's, W U(-1, 1) with
unit-norm rows, alpha = sigma(w) from 10 power iterations (the weights differ
from soma's draws, the work does not).  Data: Fashion-MNIST from
data/fashion (raw or .gz IDX files), else MNIST; normalised with the data
set's mean/std as soma's loader; batches drawn from a shuffled permutation.

Timing follows bench_ide.c: one model per T, WARMUP iterations each, the
REPEATS repeats interleaved over T; step_ms the median over repeats of the
mean of STEPS whole iterations (batch drawing included), min_ms the fastest
repeat; sim_ms (spectral-norm weight, F x with its batchnorm, the T-step
simulation), backward_ms (f(a_T), readout, loss, backward with the implicit
solve in the hook), update_ms (optimizer step and zero_grad) from the same
iterations; iters, residual, rate_gap (RMS |f(a_T) - a_T|) their means.

usage: /usr/bin/python3 bench/torch_ide.py THREADS STEPS REPEATS [T...]   (default 5 30 100;
                                                     BENCH_CLOCK=cpu: CPU time, as bench_ide)
       /usr/bin/python3 bench/torch_ide.py --check [BUILD [T]]
  --check  runs BUILD/bench/bench_ide check (BUILD default build/rel, T
           default 5): soma's initial weights and buffers, its first
           unshuffled training batch, and after one training iteration its
           rates a_T, implicit solution beta, W_eff, grad store, weights and
           buffers.  From the same weights and batch this file's IDE runs in
           float64 (the reference) and float32, and compares:
           - the power iteration (u, v), W_eff and the running statistics
             (relative L2 error);
           - the rates a_T per sample: a sample matches when every rate is
             within 1e-5 of the float64 simulation's; one that does not must
             be ambiguous: a threshold test of its float64 simulation within
             1e-4 of V_th (float32 rounding can flip such a spike, and the
             feedback spreads it over the sample); at most B/10 of them;
           - the gradients (soma's grad store) and beta, computed at soma's
             own a_T (so that a flipped spike cannot blur the comparison of
             the backward), against the float64 pass: relative L2 error,
             the reference norm floored at 1e-3 of the largest tensor's
             (F's bias comes right before the batchnorm: its exact gradient
             is 0, both sides hold rounding noise); the tolerance is 10x the
             float32 pass's own error + 1e-5, at most 1e-3;
           - the SGD step: soma's weights after it against w - lr (g + wd w)
             from its own weights and grad store in float32 (one ulp), and
             against torch.optim.SGD applied to them (within 4 units in the
             last place of the operands: torch fuses the adds).
           Negative controls that must fail: the gradient without the
           implicit solve (beta = g, the one-step "truncated" gradient) must
           miss soma's by more than 10x the tolerance on every tensor it
           changes; the rates with the leak applied before the reset must
           miss soma's on more than B/10 unambiguous samples.  Exit 1 on any
           failure (also when bench_ide reports that its split timing path is
           not bit-identical to soma_rule_train_batch).
"""
import gzip
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from bench_common import CPU_CLOCK, Shuffle, clock, load_mnist, peak_rss_mib, read_safetensors, rel_err, sort_median

NET = "784-400-bn-10"
N0, N1, C = 784, 400, 10
# IDE_NET=f64c5: configs/ide-f64c5-mnist.ini's net on MNIST, as bench_ide.c with the same
# variable: F = conv 1 -> 64, 5x5, stride 2, pad 2 (+ bias) + BatchNorm2d -> 64x14x14,
# feedback W = conv 64 -> 64, 5x5, pad 2, no bias, under the spectral norm of the conv
# *operator* (soma's: sigma = u^T W v after one power iteration v = W^T u / |.|,
# u = W v / |.| through the conv and its transpose, u and v maps of 64x14x14), readout
# linear 12544 -> 10.  The rest (simulation, map, Broyden, SGD) as F400.
IDE_NET = os.environ.get("IDE_NET", "f400")
CONV = IDE_NET == "f64c5"
if IDE_NET not in ("f400", "f64c5"):
    sys.exit(f"torch_ide.py: IDE_NET must be f400 or f64c5, got '{IDE_NET}'")
CH, HW, K = 64, 14, 5
if CONV:
    NET = "conv5x64s2p2-bn-10"
B = 128
VTH, LEAK = 2.0, 0.95
MAX_ITER, TOL, MEM = 30, 1e-6, 27
SN_C = 1.0
LR, MOMENTUM, WD = 0.05, 0.9, 5e-4
BN_EPS, BN_MOM = 1e-5, 0.1
WARMUP = 1
DATA_STATS = {"fashion": (0.2860, 0.3530), "mnist": (0.1307, 0.3081)}   # soma's dataset.c
MARGIN = 1e-4          # --check: a threshold test this close to V_th may flip in float32
RATE_ATOL = 1e-5       # --check: rates equal up to float32 rounding
SGD_ULP = 4           # --check: torch.optim.SGD against soma's step, operand ulps
GRAD_FLOOR = 1e-3      # --check: gradient norms below this fraction of the largest count as 0
# BENCH_CLOCK=cpu / IDE_CLOCK=cpu: `clock` is the process's CPU time (bench_common, as bench_ide)


# ---- data -------------------------------------------------------------------------

def idx_bytes(path):
    """An IDX file, raw or .gz (raw wins, as soma's loader), as a uint8 array."""
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            raw = open(p, "rb").read()
            if p.endswith(".gz"):
                raw = gzip.decompress(raw)
            ndim = raw[3]
            dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise FileNotFoundError(path)


def load_data():
    """(x (n, 784) uint8, y (n,) int64, name): Fashion-MNIST, else MNIST."""
    try:
        x = idx_bytes("data/fashion/train-images-idx3-ubyte").reshape(-1, N0)
        y = idx_bytes("data/fashion/train-labels-idx1-ubyte").astype(np.int64)
        return torch.from_numpy(x.copy()), torch.from_numpy(y), "fashion"
    except FileNotFoundError:
        x, y = load_mnist()
        return x, y, "mnist"


# ---- the model --------------------------------------------------------------------

def init_state(seed=0, dtype=torch.float32):
    """(params, buffers): F400's parameters (leaves) and buffers, soma's init schemes."""
    torch.manual_seed(seed)
    fc, out = torch.nn.Linear(N0, N1), torch.nn.Linear(N1, C)
    w = torch.empty(N1, N1).uniform_(-1.0, 1.0)
    w /= w.norm(dim=1, keepdim=True)
    u = F.normalize(torch.randn(N1), dim=0)
    v = F.normalize(torch.randn(N1), dim=0)
    for _ in range(10):
        v = F.normalize(w.t() @ u, dim=0)
        u = F.normalize(w @ v, dim=0)
    P = dict(fc_w=fc.weight.data, fc_b=fc.bias.data, bn_w=torch.ones(N1), bn_b=torch.zeros(N1),
             w=w, g=(u @ (w @ v)).reshape(1), out_w=out.weight.data, out_b=out.bias.data)
    Bf = dict(u=u, v=v, rm=torch.zeros(N1), rv=torch.ones(N1))
    return ({k: t.to(dtype).clone().requires_grad_() for k, t in P.items()},
            {k: t.to(dtype).clone() for k, t in Bf.items()})


def weight(P, Bf, power_iter=True):
    """W_eff = clamp(alpha, -c, c) w / sigma, sigma = u^T w v (one power iteration first)."""
    w = P["w"]
    if power_iter:
        with torch.no_grad():
            Bf["v"].copy_(F.normalize(torch.mv(w.t(), Bf["u"]), dim=0, eps=1e-12))
            Bf["u"].copy_(F.normalize(torch.mv(w, Bf["v"]), dim=0, eps=1e-12))
    sigma = torch.dot(Bf["u"], torch.mv(w, Bf["v"]))
    return P["g"].clamp(-SN_C, SN_C) * w / sigma


def init_state_conv(seed=0, dtype=torch.float32):
    """(params, buffers) of F64C5, soma's init schemes (torch's Conv2d / Linear
    defaults for F and the readout; W U(-1, 1) with unit-norm filters; alpha =
    the operator norm from 10 power iterations)."""
    torch.manual_seed(seed)
    fc, out = torch.nn.Conv2d(1, CH, K, stride=2, padding=K // 2), torch.nn.Linear(CH * HW * HW, C)
    w = torch.empty(CH, CH, K, K).uniform_(-1.0, 1.0)
    w /= w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    u = F.normalize(torch.randn(CH * HW * HW), dim=0)
    v = F.normalize(torch.randn(CH * HW * HW), dim=0)
    for _ in range(10):
        u, v = conv_power_iter(w, u, v)
    P = dict(fc_w=fc.weight.data, fc_b=fc.bias.data, bn_w=torch.ones(CH), bn_b=torch.zeros(CH),
             w=w, g=conv_sigma(w, u, v).reshape(1), out_w=out.weight.data, out_b=out.bias.data)
    Bf = dict(u=u, v=v, rm=torch.zeros(CH), rv=torch.ones(CH))
    return ({k: t.to(dtype).clone().requires_grad_() for k, t in P.items()},
            {k: t.to(dtype).clone() for k, t in Bf.items()})


def conv_power_iter(w, u, v):
    with torch.no_grad():
        v = F.normalize(F.conv_transpose2d(u.view(1, CH, HW, HW), w, padding=K // 2).flatten(), dim=0, eps=1e-12)
        u = F.normalize(F.conv2d(v.view(1, CH, HW, HW), w, padding=K // 2).flatten(), dim=0, eps=1e-12)
    return u, v


def conv_sigma(w, u, v):
    return torch.dot(u, F.conv2d(v.view(1, CH, HW, HW), w, padding=K // 2).flatten())


def weight_conv(P, Bf, power_iter=True):
    """W_eff = clamp(alpha, -c, c) w / sigma, sigma the conv operator's norm estimate."""
    w = P["w"]
    if power_iter:
        u, v = conv_power_iter(w, Bf["u"], Bf["v"])
        Bf["u"].copy_(u)
        Bf["v"].copy_(v)
    return P["g"].clamp(-SN_C, SN_C) * w / conv_sigma(w, Bf["u"], Bf["v"])


def input_map_conv(P, Bf, x):
    """F x (B, 64, 14, 14) with its batchnorm in training mode."""
    h = F.conv2d(x.view(-1, 1, 28, 28), P["fc_w"], P["fc_b"], stride=2, padding=K // 2)
    return F.batch_norm(h, Bf["rm"], Bf["rv"], P["bn_w"], P["bn_b"], training=True,
                        momentum=BN_MOM, eps=BN_EPS)


def feedback(s, weff):
    """W_eff s: rows of s (dense) or its maps through the 'same' conv."""
    if weff.dim() == 4:
        return F.conv2d(s, weff, padding=weff.shape[-1] // 2)
    return torch.mm(s, weff.t())


def input_map(P, Bf, x):
    """F x with its batchnorm in training mode (the running statistics updated once)."""
    h = torch.addmm(P["fc_b"], x, P["fc_w"].t())
    return F.batch_norm(h, Bf["rm"], Bf["rv"], P["bn_w"], P["bn_b"], training=True,
                        momentum=BN_MOM, eps=BN_EPS)


@torch.no_grad()
def simulate(fx, weff, T, lam=LEAK, vth=VTH, leak_first=False, margin=False):
    """T LIF steps on the constant current fx: a_T (and, with margin, each
    sample's smallest |u - V| over its threshold tests).  leak_first: the
    control, the leak applied before the reset."""
    u = torch.zeros_like(fx)
    acc = torch.zeros_like(fx)
    wt = weff.t() if weff.dim() == 2 else None
    s = None
    mn = torch.full((fx.shape[0],), math.inf, dtype=fx.dtype) if margin else None
    for t in range(T):
        u += fx
        if t > 0:
            if weff.dim() == 4:
                u += feedback(s, weff)
            else:
                u.addmm_(s, wt)
        if margin:
            mn = torch.minimum(mn, (u - vth).abs().flatten(1).min(dim=1).values)
        s = (u >= vth).to(fx.dtype)
        if leak_first:
            u.mul_(lam).sub_(s, alpha=vth)
        else:
            u.sub_(s, alpha=vth).mul_(lam)
        acc.mul_(lam).add_(s)
    norm = sum(lam ** k for k in range(T))
    a = acc * (1.0 / norm)
    return (a, mn) if margin else a


def _pairs_dot(M, x):
    return torch.einsum("bmd,bd->bm", M, x)


def broyden(JT, g, max_iter=MAX_ITER, tol=TOL, mem=MEM):
    """Limited-memory good Broyden on G(beta) = J^T beta - beta + g = 0 from 0,
    per-sample inverse estimate -I + U V^T, as src/rule/ide.c (docs/ide.md):
    (beta, relative residual of the best iterate, J^T products)."""
    Bn, D = g.shape
    gn = g.norm().item()
    if not gn > 0:
        return torch.zeros_like(g), 0.0, 0
    beta = torch.zeros_like(g)
    G = g.clone()
    best, best_beta = 1.0, beta.clone()
    dx = G.clone()                       # -Binv G with Binv = -I
    U = g.new_zeros(Bn, mem, D)
    V = g.new_zeros(Bn, mem, D)
    k = iters = 0

    def matvec(n, x):                    # Binv x
        return -x if n == 0 else -x + torch.einsum("bm,bmd->bd", _pairs_dot(V[:, :n], x), U[:, :n])

    def rmatvec(n, x):                   # x^T Binv
        return -x if n == 0 else -x + torch.einsum("bm,bmd->bd", _pairs_dot(U[:, :n], x), V[:, :n])

    for _ in range(max_iter):
        if best <= tol:
            break
        beta = beta + dx
        Gn = JT(beta) - beta + g
        res = Gn.norm().item() / gn
        iters += 1
        if not math.isfinite(res) or res > 1e6:
            break
        if res < best:
            best, best_beta = res, beta.clone()
        if res <= tol:
            break
        dg = Gn - G
        have, slot = min(k, mem), k % mem
        vT = rmatvec(have, dx)
        Bdg = matvec(have, dg)
        den = (vT * dg).sum(dim=1, keepdim=True)
        ok = (den.abs() > 1e-30) & torch.isfinite(den)
        U[:, slot] = torch.where(ok, (dx - Bdg) / torch.where(ok, den, torch.ones_like(den)), 0.0)
        V[:, slot] = torch.where(ok, vT, 0.0)
        G = Gn
        dx = -matvec(min(k + 1, mem), G)
        k += 1
    return best_beta, best, iters


class Replace(torch.autograd.Function):
    """Forward: a_T; backward: the incoming gradient goes to f(a_T)."""

    @staticmethod
    def forward(ctx, z1, a):
        return a.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def implicit_backward(P, fx, weff, a, y, solve=True):
    """f(a_T), the readout and loss.backward() with the implicit solve in the
    hook; the parameters' .grad hold the gradient.  (loss, info)."""
    a_in = a.detach().requires_grad_()
    z1 = ((feedback(a_in, weff) + fx) / VTH).clamp(0.0, 1.0)   # f(a_T)
    z = Replace.apply(z1, a)
    info = {}

    def hook(g):
        if solve:
            def JT(v):   # on (B, D) rows: the maps flattened (conv)
                return torch.autograd.grad(z1, a_in, v.view_as(z1), retain_graph=True)[0].flatten(1)
            beta, res, iters = broyden(JT, g.flatten(1))
            beta = beta.view_as(g)
        else:
            beta, res, iters = g, float("nan"), 0
        info.update(beta=beta, res=res, iters=iters)
        return beta

    z.register_hook(hook)
    logits = torch.addmm(P["out_b"], z.flatten(1), P["out_w"].t())
    loss = F.cross_entropy(logits, y)
    loss.backward(inputs=list(P.values()))
    info["gap"] = (z1.detach() - a).pow(2).mean().sqrt().item()
    return loss.item(), info


class Run:
    """One T: the model, its optimizer and its own shuffled stream of batches."""

    def __init__(self, T, x, y, stats):
        self.T, self.x, self.y = T, x, y
        self.mean, self.std = stats
        self.batches = Shuffle(x.shape[0], B, torch.Generator().manual_seed(0))
        self.P, self.Bf = (init_state_conv if CONV else init_state)()
        self.weight, self.input_map = (weight_conv, input_map_conv) if CONV else (weight, input_map)
        self.opt = torch.optim.SGD(list(self.P.values()), lr=LR, momentum=MOMENTUM, weight_decay=WD)
        self.total, self.sim, self.bwd, self.upd = [], [], [], []
        self.reset()

    def reset(self):
        self.loss, self.iters, self.res, self.gap, self.n = 0.0, 0, 0.0, 0.0, 0

    def step(self, t):
        idx = self.batches.next()
        xb = self.x[idx].float().div_(255.0).sub_(self.mean).div_(self.std)   # as soma's loader
        yb = self.y[idx]
        t0 = clock()
        weff = self.weight(self.P, self.Bf, True)
        fx = self.input_map(self.P, self.Bf, xb)
        a = simulate(fx.detach(), weff.detach(), self.T)
        t1 = clock()
        self.loss, info = implicit_backward(self.P, fx, weff, a, yb)
        t2 = clock()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t3 = clock()
        t[0] += t1 - t0
        t[1] += t2 - t1
        t[2] += t3 - t2
        self.iters += info["iters"]
        self.res += info["res"]
        self.gap += info["gap"]
        self.n += 1


def bench(argv):
    threads, steps, repeats = (int(a) for a in argv[:3])
    Ts = [int(a) for a in argv[3:]] or [5, 30, 100]
    torch.set_num_threads(threads)
    if CONV:
        x, y = load_mnist()
        data = "mnist"
    else:
        x, y, data = load_data()
    runs = [Run(T, x, y, DATA_STATS[data]) for T in Ts]
    for r in runs:   # warm-up
        for _ in range(WARMUP):
            r.step([0.0, 0.0, 0.0])
        r.reset()
    for _ in range(repeats):   # interleaved over T, as bench_ide.c
        for r in runs:
            t = [0.0, 0.0, 0.0]
            t0 = clock()
            for _ in range(steps):
                r.step(t)
            r.total.append((clock() - t0) / steps)
            r.sim.append(t[0] / steps)
            r.bwd.append(t[1] / steps)
            r.upd.append(t[2] / steps)
    peak = peak_rss_mib()
    for r in runs:
        step, sim, bwd, upd = (sort_median(v) for v in (r.total, r.sim, r.bwd, r.upd))
        n = max(r.n, 1)
        print(f"torch ide net={NET} data={data} batch={B} threads={threads} T={r.T} steps={steps} "
              f"repeats={repeats} step_ms={step * 1e3:.3f} min_ms={r.total[0] * 1e3:.3f} "
              f"sim_ms={sim * 1e3:.3f} backward_ms={bwd * 1e3:.3f} update_ms={upd * 1e3:.3f} "
              f"split_ms={(sim + bwd + upd) * 1e3:.3f} samples_per_s={B / step:.1f} "
              f"iters={r.iters / n:.1f} residual={r.res / n:.3g} rate_gap={r.gap / n:.4f} "
              f"proc_peak_rss_mib={peak:.1f} loss={r.loss:.4f} torch={torch.__version__} "
              f"clock={'cpu' if CPU_CLOCK else 'wall'}")


# ---- check ----------------------------------------------------------------------

def soma_keys(meta, ten):
    """This file's names -> soma's tensor names (params "P.*", buffers "B.*")."""
    params, buffers = meta["params"].split(","), meta["buffers"].split(",")
    keys = {}
    for nm in params:
        if nm.endswith(".weight_fb"):
            keys["P.w"] = nm
        elif nm.endswith(".weight_fb_g"):
            keys["P.g"] = nm
    dense = sorted({nm.split(".")[0] for nm in params if nm.endswith(".weight") or nm.endswith(".bias")},
                   key=int)
    if len(dense) == 3:   # F, its batchnorm, the readout, in net order
        for pfx, role in zip(dense, ("fc", "bn", "out")):
            keys[f"P.{role}_w"], keys[f"P.{role}_b"] = pfx + ".weight", pfx + ".bias"
    for nm in buffers:
        for suffix, role in ((".weight_fb_u", "u"), (".weight_fb_v", "v"), (".running_mean", "rm"),
                             (".running_var", "rv")):
            if nm.endswith(suffix):
                keys["B." + role] = nm
    want = {"P." + k for k in ("fc_w", "fc_b", "bn_w", "bn_b", "w", "g", "out_w", "out_b")} | \
           {"B." + k for k in ("u", "v", "rm", "rv")}
    if set(keys) != want or sorted(keys[k] for k in keys if k.startswith("P.")) != sorted(params) or \
            ten["w." + keys["P.fc_w"]].shape != (N1, N0) or ten["w." + keys["P.out_w"]].shape != (C, N1):
        return None
    return keys


def from_dump(ten, keys, prefix_p, prefix_b, dtype):
    P = {k[2:]: torch.tensor(ten[prefix_p + "." + v], dtype=dtype).reshape(-1 if k == "P.g" else
                                                                          ten[prefix_p + "." + v].shape)
         .requires_grad_() for k, v in keys.items() if k.startswith("P.")}
    Bf = {k[2:]: torch.tensor(ten[prefix_b + "." + v], dtype=dtype) for k, v in keys.items()
          if k.startswith("B.")}
    return P, Bf


def check(argv):
    if CONV:
        sys.exit("torch_ide.py --check: F400 only (IDE_NET=f400); the conv forms are checked by "
                 "tests/test_ide.c against refs/ide_ref.py")
    build = argv[0] if argv else "build/rel"
    T = int(argv[1]) if len(argv) > 1 else 5
    exe = os.path.join(build, "bench", "bench_ide")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ide_check.safetensors")
        run = subprocess.run([exe, "check", path, str(T)], stdout=subprocess.DEVNULL)
        if not os.path.exists(path):
            print("torch_ide.py --check: bench_ide check wrote nothing", file=sys.stderr)
            sys.exit(1)
        ten, meta = read_safetensors(path)
    opts = dict(kv.split("=", 1) for kv in meta["rule_options"].split())
    setting = (float(opts["ide-vth"]), float(opts["ide-leak"]), int(opts["ide-max-iter"]),
               float(opts["ide-tol"]), int(opts["ide-iter"]), int(opts["ide-sn"]), float(opts["ide-sn-c"]),
               float(meta["lr"]), float(meta["momentum"]), float(meta["weight_decay"]))
    want = (VTH, LEAK, MAX_ITER, TOL, 0, 1, SN_C, LR, MOMENTUM, WD)
    if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(setting, want)) or int(float(meta["T"])) != T:
        print(f"torch_ide.py --check: soma's setting {setting} T {meta['T']} is not this file's {want} T {T}",
              file=sys.stderr)
        sys.exit(1)
    keys = soma_keys(meta, ten)
    if keys is None:
        print(f"torch_ide.py --check: unexpected tensors {meta['params']} / {meta['buffers']}", file=sys.stderr)
        sys.exit(1)
    x64 = torch.from_numpy(ten["x"]).double()
    y = torch.from_numpy(ten["y"].astype(np.int64))
    a_soma = torch.from_numpy(ten["a"]).double()
    Bn = x64.shape[0]

    def forward(dtype):
        P, Bf = from_dump(ten, keys, "w", "buf", dtype)
        weff = weight(P, Bf, True)
        fx = input_map(P, Bf, x64.to(dtype))
        return P, Bf, weff, fx

    # the forward: power iteration, W_eff, running statistics, rates
    P64, Bf64, weff64, fx64 = forward(torch.float64)
    after_b = {k[2:]: torch.from_numpy(ten["bufafter." + v]).double() for k, v in keys.items() if k.startswith("B.")}
    uv_err = max(rel_err(after_b[k], Bf64[k]) for k in ("u", "v"))
    rs_err = max(rel_err(after_b[k], Bf64[k]) for k in ("rm", "rv"))
    weff_err = rel_err(torch.from_numpy(ten["weff"]).double(), weff64.detach())
    a64, margin = simulate(fx64.detach(), weff64.detach(), T, margin=True)

    def rate_match(a_ref, mg):
        """per sample: (matches, ambiguous) against soma's rates"""
        diff = (a_soma - a_ref).abs().max(dim=1).values
        return diff <= RATE_ATOL, mg < MARGIN

    match, ambiguous = rate_match(a64, margin)
    rates_ok = bool((match | ambiguous).all()) and int((~match).sum()) <= Bn // 10
    rate_err = (a_soma - a64)[match].abs().max().item() if match.any() else math.inf
    a_ctl, margin_ctl = simulate(fx64.detach(), weff64.detach(), T, leak_first=True, margin=True)
    m_ctl, amb_ctl = rate_match(a_ctl, margin_ctl)
    ctl_rates_miss = int((~m_ctl & ~amb_ctl).sum())

    # the backward at soma's a_T: float64, float32, and the control without the solve
    def grads(dtype, solve=True):
        P, Bf, weff, fx = forward(dtype)
        loss, info = implicit_backward(P, fx, weff, a_soma.to(dtype), y, solve=solve)
        return {k: t.grad.detach().double().clone() for k, t in P.items()}, loss, info

    g64, loss64, info64 = grads(torch.float64)
    g32, _, info32 = grads(torch.float32)
    gctl, _, _ = grads(torch.float64, solve=False)
    names = sorted(g64)
    soma_g = {k: torch.from_numpy(ten["g." + keys["P." + k]]).double().reshape(g64[k].shape) for k in names}
    # relative L2 error, the reference's norm floored at GRAD_FLOOR of the
    # largest gradient's: F's bias sits right before the batchnorm, so its
    # exact gradient is 0 and both sides hold rounding noise there
    floor = GRAD_FLOOR * max(t.norm().item() for t in g64.values())

    def err(a, b):
        return ((a - b).norm() / max(b.norm().item(), floor)).item()

    g_err = {k: err(soma_g[k], g64[k]) for k in names}
    g_err32 = {k: err(g32[k], g64[k]) for k in names}
    beta_err = rel_err(torch.from_numpy(ten["beta"]).double(), info64["beta"])
    beta_err32 = rel_err(info32["beta"].double(), info64["beta"])
    changed = [k for k in names if err(gctl[k], g64[k]) > 1e-6]
    ctl_err = {k: err(soma_g[k], gctl[k]) for k in changed}
    tol = min(10 * max(list(g_err32.values()) + [beta_err32]) + 1e-5, 1e-3)
    grads_ok = max(list(g_err.values()) + [beta_err]) < tol and min(t.norm().item() for k, t in soma_g.items()
                                                                    if k != "g") > 0
    # the SGD step on soma's own weights and grad store, float32: the first
    # momentum step is w - lr (g + wd w), soma's order of operations, to one
    # ulp of the result; and torch.optim.SGD (fused adds), to SGD_ULP units in
    # the last place of the operands w, lr (g + wd w) (where w - lr d cancels,
    # one rounding less is many ulps of the result)
    P32, _ = from_dump(ten, keys, "w", "buf", torch.float32)
    for k, t in P32.items():
        t.grad = torch.from_numpy(ten["g." + keys["P." + k]]).reshape(t.shape).clone()
    torch.optim.SGD(list(P32.values()), lr=float(meta["lr"]), momentum=float(meta["momentum"]),
                    weight_decay=float(meta["weight_decay"])).step()
    ulp = tulp = 0.0
    lr32, wd32 = np.float32(meta["lr"]), np.float32(meta["weight_decay"])
    for k, t in P32.items():
        got = ten["after." + keys["P." + k]].reshape(-1)
        w0 = ten["w." + keys["P." + k]].reshape(-1)
        step = lr32 * (ten["g." + keys["P." + k]].reshape(-1) + wd32 * w0)
        exp = w0 - step
        ulp = max(ulp, float(np.max(np.abs(got - exp) / np.spacing(np.abs(exp)))))
        texp = t.detach().numpy().reshape(-1)
        tulp = max(tulp, float(np.max(np.abs(got - texp) / np.spacing(np.maximum(np.abs(w0), np.abs(step))))))
    sgd_ok = ulp <= 1.0 and tulp <= SGD_ULP
    fwd_ok = max(uv_err, rs_err, weff_err) < 1e-5
    replica = meta.get("split_replica", "?")
    ctl_grad_fails = bool(changed) and min(ctl_err.values()) > 10 * tol
    ctl_rates_fail = ctl_rates_miss > Bn // 10
    ok = fwd_ok and rates_ok and grads_ok and sgd_ok and replica == "exact" and run.returncode == 0
    controls = ctl_grad_fails and ctl_rates_fail
    fmt = lambda dct: ",".join(f"{k}:{v:.1e}" for k, v in dct.items())  # noqa: E731
    print(f"torch ide check data={meta['data']} batch={Bn} T={T} uv_rel_err={uv_err:.1e} "
          f"weff_rel_err={weff_err:.1e} running_stats_rel_err={rs_err:.1e} "
          f"rates_exact={int(match.sum())}/{Bn} rates_ambiguous={int((~match & ambiguous).sum())} "
          f"rates_max_abs_err={rate_err:.1e} beta_rel_err={beta_err:.1e} grad_rel_err={fmt(g_err)} "
          f"f32_grad_rel_err={fmt(g_err32)} tol={tol:.1e} sgd_step_max_ulp={ulp:.2g} torch_sgd_max_ulp={tulp:.2g} "
          f"control_no_solve_rel_err={fmt(ctl_err)} control_leak_first_samples_missed={ctl_rates_miss}/{Bn} "
          f"iters_torch={info64['iters']} iters_soma={int(float(meta['iters']))} "
          f"res_torch={info64['res']:.3g} res_soma={float(meta['residual']):.3g} "
          f"loss_torch={loss64:.5f} loss_soma={float(meta['loss']):.5f} split_replica={replica} "
          f"result={'PASS' if ok and controls else 'FAIL'}")
    if not ctl_grad_fails:
        print("torch_ide.py --check: the control without the implicit solve matches soma too: the "
              "check cannot see the solve", file=sys.stderr)
    if not ctl_rates_fail:
        print("torch_ide.py --check: the control with the leak before the reset matches soma's rates "
              "too: the check cannot see the spike dynamics", file=sys.stderr)
    sys.exit(0 if ok and controls else 1)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--check":
        check(sys.argv[2:])
    elif len(sys.argv) >= 4 and not sys.argv[1].startswith("-"):
        bench(sys.argv[1:])
    else:
        print("usage: torch_ide.py THREADS STEPS REPEATS [T...]\n"
              "       torch_ide.py --check [BUILD [T]]", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
