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


if __name__ == "__main__":
    main()
