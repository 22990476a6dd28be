"""Golden values for soma's equilibrium propagation rule (src/rule/ep.c).

Written from the equations (Scellier et al. 2018, eqs. 6-16, 56, 59; Scellier
& Bengio 2017; Laborieux et al. 2021), not from soma's code, in float64:
  - the vector field mu is built per layer for the general (untied) dynamics,
    and as -dE/ds by autograd of the Hopfield energy for classic EP;
  - the nudging force -beta dC/ds comes from autograd of the cost;
  - the general update dmu/dW(s0) . D is autograd of <mu(W, s0), D>, the
    classic one autograd of -(E(s+) - E(s'))/beta', the readout's that of CE.
For each case it records the initial tensors, a batch, the states after the
free phase and after each nudged phase (a few Euler steps: the trajectory,
not only the fixed point, is checked), and the grad store soma writes
(-lr_k * update).  The particles case takes two plain-SGD steps.

Run with Debian's interpreter:  /usr/bin/python3 refs/ep_ref.py tests/fixtures
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402

torch.set_default_dtype(torch.float64)


def rho(s, act):
    return torch.sigmoid(s) if act == "sigmoid" else s.clamp(0.0, 1.0)


class Case:
    def __init__(self, name, sizes, act, variant, loss, eps, beta, free, nudge, sym=0,
                 lrs=None, B=3, seed=0, particles=0):
        self.__dict__.update(locals())
        del self.__dict__["self"]
        g = torch.Generator().manual_seed(seed)
        self.L = len(sizes) - 1
        self.nd = self.L - 1 if loss == "ce" else self.L
        self.lrs = lrs or [1.0] * self.L
        # dense layer k (1-based) is net layer 2(k-1) in "n0-n1-...": dense, act, dense, ...
        self.W, self.b, self.F = {}, {}, {}
        for k in range(1, self.L + 1):
            self.W[k] = (torch.rand(sizes[k], sizes[k - 1], generator=g) - 0.5) * 1.2
            self.b[k] = torch.rand(sizes[k], generator=g) * 0.8 - 0.2
        if variant == "general":
            for k in range(2, self.nd + 1):
                self.F[k] = (torch.rand(sizes[k - 1], sizes[k], generator=g) - 0.5) * 1.2
        self.x = torch.rand(B, sizes[0], generator=g)
        self.y = torch.randint(0, sizes[-1], (B,), generator=g)

    def names(self):
        t = {}
        for k in range(1, self.L + 1):
            t["%d.weight" % (2 * (k - 1))] = self.W[k]
            t["%d.bias" % (2 * (k - 1))] = self.b[k]
        for k, F in self.F.items():
            t["%d.weight_fb" % (2 * (k - 1))] = F
        return t

    # -- cost and energy ---------------------------------------------------
    def cost(self, s, W=None, b=None):
        W = W if W is not None else self.W
        b = b if b is not None else self.b
        out = s[self.nd]
        if self.loss == "ce":
            logits = rho(out, self.act) @ W[self.L].T + b[self.L]
            return torch.nn.functional.cross_entropy(logits, self.y, reduction="sum")
        onehot = torch.nn.functional.one_hot(self.y, self.sizes[-1]).double()
        return 0.5 * ((onehot - out) ** 2).sum()

    def energy(self, s, W, b):
        r = [rho(self.x, self.act)] + [rho(s[k], self.act) for k in range(1, self.nd + 1)]
        E = 0.0
        for k in range(1, self.nd + 1):
            E = E + 0.5 * (s[k] ** 2).sum() - (b[k] * r[k]).sum() - ((r[k] @ W[k]) * r[k - 1]).sum()
        return E

    def mu(self, s, W=None, b=None, F=None):
        W = W if W is not None else self.W
        b = b if b is not None else self.b
        F = F if F is not None else self.F
        if self.variant == "classic":
            ss = {k: s[k].detach().requires_grad_(True) for k in s}
            E = self.energy(ss, W, b)
            gr = torch.autograd.grad(E, [ss[k] for k in range(1, self.nd + 1)], create_graph=True)
            return {k: -gr[k - 1] for k in range(1, self.nd + 1)}
        r = [rho(self.x, self.act)] + [rho(s[k], self.act) for k in range(1, self.nd + 1)]
        m = {}
        for k in range(1, self.nd + 1):
            drive = r[k - 1] @ W[k].T + b[k]
            if k < self.nd:
                drive = drive + r[k + 1] @ F[k + 1].T
            m[k] = drive - s[k]
        return m

    def force(self, s, beta):
        ss = {k: s[k].detach().requires_grad_(True) for k in s}
        C = self.cost(ss)
        gr = torch.autograd.grad(C, [ss[self.nd]], allow_unused=True)[0]
        f = {k: torch.zeros_like(s[k]) for k in s}
        f[self.nd] = -beta * gr
        return f

    def relax(self, s, steps, beta):
        s = {k: v.clone() for k, v in s.items()}
        for _ in range(steps):
            m = self.mu(s)
            f = self.force(s, beta) if beta != 0 else {k: 0 for k in s}
            s = {k: (s[k] + self.eps * (m[k].detach() + f[k])).clamp(0.0, 1.0) for k in s}
        return s

    def zeros(self):
        return {k: torch.zeros(self.B, self.sizes[k]) for k in range(1, self.nd + 1)}

    # -- the update, as the grad store: -lr_k * update ----------------------
    def grads(self, s0, sp, sm, beta):
        W = {k: v.clone().requires_grad_(True) for k, v in self.W.items()}
        b = {k: v.clone().requires_grad_(True) for k, v in self.b.items()}
        F = {k: v.clone().requires_grad_(True) for k, v in self.F.items()}
        B = self.B
        if self.variant == "general":
            if self.sym:
                D = {k: (sp[k] - sm[k]) / (2 * beta) for k in s0}
            else:
                D = {k: (sp[k] - s0[k]) / beta for k in s0}
            m = self.mu(s0, W, b, F)
            obj = sum((m[k] * D[k]).sum() for k in m) / B
        else:
            other, bb = (sm, 2 * beta) if self.sym else (s0, beta)
            obj = -(self.energy(sp, W, b) - self.energy(other, W, b)) / bb / B
        # update directions (ascent) for the dynamical layers and feedback
        dyn = [W[k] for k in range(1, self.nd + 1)] + [b[k] for k in range(1, self.nd + 1)] + \
            [F[k] for k in sorted(F)]
        ups = torch.autograd.grad(obj, dyn, allow_unused=True)
        out = {}
        nd = self.nd
        for i, k in enumerate(range(1, nd + 1)):
            out["%d.weight" % (2 * (k - 1))] = -self.lrs[k - 1] * ups[i]
            out["%d.bias" % (2 * (k - 1))] = -self.lrs[k - 1] * ups[nd + i]
        for j, k in enumerate(sorted(F)):
            out["%d.weight_fb" % (2 * (k - 1))] = -self.lrs[k - 1] * ups[2 * nd + j]
        if self.loss == "ce":
            L = self.L
            ends = [sp, sm] if self.sym else [sp]
            gW = torch.zeros_like(self.W[L])
            gb = torch.zeros_like(self.b[L])
            for e in ends:
                WL = self.W[L].clone().requires_grad_(True)
                bL = self.b[L].clone().requires_grad_(True)
                Wd = dict(self.W)
                bd = dict(self.b)
                Wd[L], bd[L] = WL, bL
                C = self.cost(e, Wd, bd) / B
                a, c = torch.autograd.grad(C, [WL, bL])
                gW, gb = gW + a / len(ends), gb + c / len(ends)
            out["%d.weight" % (2 * (L - 1))] = self.lrs[L - 1] * gW
            out["%d.bias" % (2 * (L - 1))] = self.lrs[L - 1] * gb
        return out

    def phases(self, start, beta):
        s0 = self.relax(start, self.free, 0.0)
        sp = self.relax(s0, self.nudge, beta)
        sm = self.relax(s0, self.nudge, -beta) if self.sym else None
        return s0, sp, sm

    def meta(self):
        return {"spec": "-".join(str(n) for n in self.sizes), "act": self.act,
                "variant": self.variant, "loss": self.loss, "eps": repr(self.eps),
                "beta": repr(self.beta), "free": self.free, "nudge": self.nudge,
                "symmetric": self.sym, "lrs": ",".join(repr(v) for v in self.lrs),
                "particles": self.particles}


def put_states(out, prefix, s):
    for k, v in s.items():
        out["%s.%d" % (prefix, k)] = v.numpy()


def record(case, outdir, signs=(1,)):
    out = {"x": case.x.numpy(), "y": case.y.numpy().astype(np.int32)}
    for n, v in case.names().items():
        out["init." + n] = v.numpy()
    for sg in signs:
        pre = "" if len(signs) == 1 else ("pos." if sg > 0 else "neg.")
        beta = sg * case.beta
        s0, sp, sm = case.phases(case.zeros(), beta)
        put_states(out, pre + "s0", s0)
        put_states(out, pre + "sp", sp)
        if sm is not None:
            put_states(out, pre + "sm", sm)
        for n, g in case.grads(s0, sp, sm, beta).items():
            out[pre + "grad." + n] = g.numpy()
    meta = case.meta()
    meta["signs"] = ",".join(str(s) for s in signs)
    fixture.write(os.path.join(outdir, "ep_%s.safetensors" % case.name), out, meta)


def record_particles(case, outdir, index, lr):
    """Two plain-SGD steps on the same batch; the second free phase starts
    from the particles the first one stored."""
    out = {"x": case.x.numpy(), "y": case.y.numpy().astype(np.int32),
           "index": np.array(index, dtype=np.int32)}
    for n, v in case.names().items():
        out["init." + n] = v.numpy()
    S = sum(case.sizes[1:case.nd + 1])
    P = torch.zeros(case.particles, S)
    for step in (1, 2):
        start = {}
        off = 0
        for k in range(1, case.nd + 1):
            start[k] = P[index, off:off + case.sizes[k]].clone()
            off += case.sizes[k]
        s0, sp, sm = case.phases(start, case.beta)
        P[index] = torch.cat([s0[k] for k in range(1, case.nd + 1)], dim=1)
        put_states(out, "step%d.s0" % step, s0)
        g = case.grads(s0, sp, sm, case.beta)
        for k in range(1, case.L + 1):
            case.W[k] = case.W[k] - lr * g["%d.weight" % (2 * (k - 1))]
            case.b[k] = case.b[k] - lr * g["%d.bias" % (2 * (k - 1))]
    for n, v in case.names().items():
        out["after." + n] = v.numpy()
    out["after.ep.particles"] = P.numpy()
    meta = case.meta()
    meta["lr"] = repr(lr)
    fixture.write(os.path.join(outdir, "ep_%s.safetensors" % case.name), out, meta)


# -- convolutional EP (Laborieux et al. 2021's P_CNN / VF_CNN layer) ----------
#
# Conv layer k: layer_k(r) = maxpool_M(conv2d(r, W_k, b_k, stride, pad)),
# r = rho(s_{k-1}) (B, C, H, W); its state s_k is (B, O, PH, PW), stored
# flattened.  Conv layers come first, then dense layers (flattened input).
#   classic: E = sum_k 1/2 |s_k|^2 - <rho(s_k), layer_k(rho(s_{k-1}))>, mu = -dE/ds
#     (autograd: the feedback into s_k is the VJP of layer_{k+1} through the
#     max pool's argmax at the current state, as torch's max_pool2d routes it)
#   general: mu_k = layer_k(rho(s_{k-1})) + fb_k - s_k, with fb_k the VJP of
#     r -> maxpool(conv2d(r, G_{k+1})) (no bias) at rho(s_k) against
#     rho(s_{k+1}) for a conv layer k+1 (autograd, its own argmax), or
#     F_{k+1} rho(s_{k+1}) for a dense one.
# Updates as for the dense cases: autograd of <mu(theta, s0), D> (general) or
# of -(E(s+) - E(s'))/beta' (classic).  Every max-pool window met along the
# trajectories is checked for a clear winner, so float32 C cannot pick
# another argmax than float64 torch.
F = torch.nn.functional


class ConvCase(Case):
    def __init__(self, name, in_shape, layers, act, variant, loss, eps, beta, free, nudge,
                 sym=0, lrs=None, B=2, seed=0, switch=True):
        """layers: ("conv", O, K, stride, pad, M) ... then ("fc", N) ...; switch: the seed
        must move some max-pool winner between the states the update reads"""
        self.__dict__.update(locals())
        del self.__dict__["self"]
        self.particles = 0
        g = torch.Generator().manual_seed(seed)
        self.L = len(layers)
        self.nd = self.L - 1 if loss == "ce" else self.L
        self.lrs = lrs or [1.0] * self.L
        self.W, self.b, self.F = {}, {}, {}
        self.shape = {0: tuple(in_shape)}     # per-sample state shapes
        self.index = {}                       # soma's net layer index of layer k
        tokens, i, seen_conv = [], 0, False
        for k, l in enumerate(layers, 1):
            C, H, Wd = self.shape[k - 1] if len(self.shape[k - 1]) == 3 else (0, 0, 0)
            last = k == self.L
            if l[0] == "conv":
                _, O, K, st, pad, M = l
                tok = "conv%dx%d" % (K, O) + ("s%d" % st if st != 1 else "") + \
                    ("p%d" % pad if pad else "") + "m%d" % M
                OH = (H + 2 * pad - K) // st + 1
                OW = (Wd + 2 * pad - K) // st + 1
                self.shape[k] = (O, OH // M, OW // M)
                self.W[k] = (torch.rand(O, C, K, K, generator=g) - 0.5) * 1.2
                self.b[k] = torch.rand(O, generator=g) * 0.8 - 0.2
                self.index[k] = i
                i += 2 if last else 3             # conv, maxpool, act
                seen_conv = True
            else:
                N = l[1]
                tok = "fc%d" % N
                if seen_conv and len(self.shape[k - 1]) == 3:
                    i += 1                        # the flatten soma inserts
                nin = int(np.prod(self.shape[k - 1]))
                self.shape[k] = (N,)
                self.W[k] = (torch.rand(N, nin, generator=g) - 0.5) * 1.2
                self.b[k] = torch.rand(N, generator=g) * 0.8 - 0.2
                self.index[k] = i
                i += 1 if last else 2             # dense, act
            tokens.append(tok)
        self.spec = "-".join(tokens)
        if variant == "general":
            for k in range(2, self.nd + 1):
                if layers[k - 1][0] == "conv":
                    self.F[k] = (torch.rand(self.W[k].shape, generator=g) - 0.5) * 1.2
                else:
                    nprev = int(np.prod(self.shape[k - 1]))
                    self.F[k] = (torch.rand(nprev, self.shape[k][0], generator=g) - 0.5) * 1.2
        self.x = torch.rand(B, *in_shape, generator=g)
        self.y = torch.randint(0, layers[-1][1], (B,), generator=g)
        self.min_gap = float("inf")
        self.nconv = sum(1 for l in layers if l[0] == "conv")

    def names(self):
        t = {}
        for k in range(1, self.L + 1):
            t["%d.weight" % self.index[k]] = self.W[k]
            t["%d.bias" % self.index[k]] = self.b[k]
        for k, Fk in self.F.items():
            t["%d.weight_fb" % self.index[k]] = Fk
        return t

    def pool_gap(self, z, M):
        """Smallest gap between a window's winner and its runner-up (exact ties of
        structurally equal windows, e.g. all-zero inputs, are the same in C)."""
        B, O, H, Wd = z.shape
        w = z[:, :, :H // M * M, :Wd // M * M].reshape(B, O, H // M, M, Wd // M, M)
        w = w.permute(0, 1, 2, 4, 3, 5).reshape(-1, M * M).detach()
        top = torch.topk(w, 2, dim=1).values
        gap = top[:, 0] - top[:, 1]
        gap = gap[gap > 0]
        if gap.numel():
            self.min_gap = min(self.min_gap, gap.min().item())

    def layer(self, k, r, W, b, G=None):
        """layer_k(r) on a per-sample-shaped input r (B, *shape[k-1]); G: feedback kernel."""
        l = self.layers[k - 1]
        if l[0] == "conv":
            _, O, K, st, pad, M = l
            z = F.conv2d(r, G if G is not None else W[k], None if G is not None else b[k],
                         stride=st, padding=pad)
            self.pool_gap(z, M)
            return F.max_pool2d(z, M)
        return r.reshape(r.shape[0], -1) @ W[k].T + b[k]

    def switched(self, a, b):
        """Max-pool windows of conv layers 2.. whose winner differs between states a and b
        (forward kernel, and feedback kernel for general): the seeds are chosen so that
        some do, and an update routed through the wrong state's argmax fails the test."""
        n = 0
        for k in range(2, self.nconv + 1):
            _, O, K, st, pad, M = self.layers[k - 1]
            ra, rb = rho(a[k - 1], self.act), rho(b[k - 1], self.act)
            kern = [(self.W[k], self.b[k])] + ([(self.F[k], None)] if k in self.F else [])
            for w, bias in kern:
                ia = F.max_pool2d(F.conv2d(ra, w, bias, stride=st, padding=pad), M,
                                  return_indices=True)[1]
                ib = F.max_pool2d(F.conv2d(rb, w, bias, stride=st, padding=pad), M,
                                  return_indices=True)[1]
                n += int((ia != ib).sum())
        return n

    def rhos(self, s):
        r = {0: rho(self.x, self.act)}
        for k in range(1, self.nd + 1):
            r[k] = rho(s[k], self.act)
        return r

    def cost(self, s, W=None, b=None):
        W = W if W is not None else self.W
        b = b if b is not None else self.b
        out = s[self.nd].reshape(self.B, -1)
        if self.loss == "ce":
            logits = rho(out, self.act) @ W[self.L].T + b[self.L]
            return F.cross_entropy(logits, self.y, reduction="sum")
        onehot = F.one_hot(self.y, self.layers[-1][1]).double()
        return 0.5 * ((onehot - out) ** 2).sum()

    def energy(self, s, W, b):
        r = self.rhos(s)
        E = 0.0
        for k in range(1, self.nd + 1):
            E = E + 0.5 * (s[k] ** 2).sum() - (r[k] * self.layer(k, r[k - 1], W, b)).sum()
        return E

    def mu(self, s, W=None, b=None, Fb=None):
        W = W if W is not None else self.W
        b = b if b is not None else self.b
        Fb = Fb if Fb is not None else self.F
        if self.variant == "classic":
            ss = {k: s[k].detach().requires_grad_(True) for k in s}
            E = self.energy(ss, W, b)
            gr = torch.autograd.grad(E, [ss[k] for k in range(1, self.nd + 1)], create_graph=True)
            return {k: -gr[k - 1] for k in range(1, self.nd + 1)}
        r = self.rhos(s)
        m = {}
        for k in range(1, self.nd + 1):
            drive = self.layer(k, r[k - 1], W, b)
            if k < self.nd:
                if self.layers[k][0] == "conv":
                    rk = r[k].detach().requires_grad_(True)
                    out = self.layer(k + 1, rk, W, b, G=Fb[k + 1])
                    fb = torch.autograd.grad((out * r[k + 1].detach()).sum(), rk,
                                             create_graph=True)[0]
                else:
                    fb = (r[k + 1].reshape(self.B, -1) @ Fb[k + 1].T).reshape(drive.shape)
                drive = drive + fb
            m[k] = drive - s[k]
        return m

    def zeros(self):
        return {k: torch.zeros(self.B, *self.shape[k]) for k in range(1, self.nd + 1)}

    def grads(self, s0, sp, sm, beta):
        out = Case.grads(self, s0, sp, sm, beta)
        # Case.grads names tensors by the dense-net index 2(k-1): rename to soma's
        ren = {}
        for k in range(1, self.L + 1):
            for t in ("weight", "bias", "weight_fb"):
                key = "%d.%s" % (2 * (k - 1), t)
                if key in out:
                    ren["%d.%s" % (self.index[k], t)] = out[key]
        return ren

    def meta(self):
        return {"spec": self.spec, "in": "x".join(str(v) for v in self.in_shape),
                "act": self.act, "variant": self.variant, "loss": self.loss,
                "eps": repr(self.eps), "beta": repr(self.beta), "free": self.free,
                "nudge": self.nudge, "symmetric": self.sym,
                "lrs": ",".join(repr(v) for v in self.lrs), "particles": 0}


def put_flat(out, prefix, s):
    for k, v in s.items():
        out["%s.%d" % (prefix, k)] = v.reshape(v.shape[0], -1).numpy()


def record_conv(cases, outdir):
    """All conv cases in one fixture, tensors and metadata under '<case>.'."""
    out, meta = {}, {"cases": ",".join(c.name for c in cases)}
    for c in cases:
        p = c.name + "."
        out[p + "x"] = c.x.numpy()
        out[p + "y"] = c.y.numpy().astype(np.int32)
        for n, v in c.names().items():
            out[p + "init." + n] = v.numpy()
        s0, sp, sm = c.phases(c.zeros(), c.beta)
        put_flat(out, p + "s0", s0)
        put_flat(out, p + "sp", sp)
        if sm is not None:
            put_flat(out, p + "sm", sm)
        for n, g in c.grads(s0, sp, sm, c.beta).items():
            out[p + "grad." + n] = g.numpy()
        for k, v in c.meta().items():
            meta[p + k] = v
        sw = [c.switched(s0, sp)] + ([c.switched(s0, sm), c.switched(sp, sm)] if sm else [])
        print("%s: %s, min max-pool gap %.3g, windows switched s0/s+%s: %s" %
              (c.name, c.spec, c.min_gap, "/s0-s-/s+-s-" if sm else "", sw))
        assert c.min_gap > 1e-4, "a near-tie in a max-pool window: pick another seed"
        # the update reads s0 and s+ (one-sided) or s0, s+ and s- (symmetric)
        assert not c.switch or min(sw[1:] if sm else sw) > 0, \
            "no argmax moves with the nudge: pick another seed"
    fixture.write(os.path.join(outdir, "ep_conv.safetensors"), out, meta)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    record(Case("general", [6, 5, 4, 3], "clamp01", "general", "mse", eps=0.3, beta=0.5,
                free=7, nudge=5, lrs=[0.4, 0.1, 0.01], seed=1), outdir)
    record(Case("general_sym_ce", [6, 5, 4, 3], "clamp01", "general", "ce", eps=0.4, beta=0.3,
                free=9, nudge=4, sym=1, lrs=[0.5, 0.2, 0.05], seed=2), outdir)
    record(Case("classic_rs", [6, 5, 4, 3], "sigmoid", "classic", "mse", eps=0.5, beta=0.7,
                free=8, nudge=3, seed=3), outdir, signs=(1, -1))
    record(Case("classic_sym_ce", [6, 5, 4, 3], "clamp01", "classic", "ce", eps=0.45,
                beta=0.4, free=10, nudge=4, sym=1, seed=4), outdir)
    record_particles(Case("particles", [6, 5, 3], "clamp01", "classic", "mse", eps=0.5,
                          beta=1.0, free=4, nudge=2, lrs=[0.1, 0.05], seed=5, particles=5),
                     outdir, index=[3, 0, 4], lr=0.5)
    c2 = [("conv", 2, 3, 1, 0, 2), ("conv", 3, 3, 1, 1, 2)]
    record_conv([
        ConvCase("classic", (1, 10, 10), c2 + [("fc", 3)], "clamp01", "classic", "mse",
                 eps=0.5, beta=0.5, free=8, nudge=4, lrs=[0.5, 0.2, 0.1], seed=13),
        ConvCase("general", (1, 10, 10), c2 + [("fc", 3)], "clamp01", "general", "mse",
                 eps=0.4, beta=0.6, free=9, nudge=5, lrs=[0.4, 0.3, 0.1], seed=25),
        ConvCase("classic_sym_ce", (1, 10, 10), c2 + [("fc", 3)], "clamp01", "classic", "ce",
                 eps=0.45, beta=0.4, free=10, nudge=4, sym=1, seed=24),
        ConvCase("general_sym_ce", (1, 10, 10), c2 + [("fc", 4), ("fc", 3)], "clamp01",
                 "general", "ce", eps=0.5, beta=0.3, free=8, nudge=4, sym=1,
                 lrs=[0.5, 0.2, 0.1, 0.05], seed=28),
        # sigmoid: rho' != 1 in the classic conv dynamics (clamp01's is 1 on [0,1])
        ConvCase("classic_sig", (1, 10, 10), c2 + [("fc", 3)], "sigmoid", "classic", "mse",
                 eps=0.5, beta=0.7, free=8, nudge=4, seed=31, switch=False),
    ], outdir)


if __name__ == "__main__":
    main()
