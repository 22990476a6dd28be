"""Golden values for soma's IDE rule (src/rule/ide.c).

Written from the equations (Xiao et al. 2021; shared/notes/ide.md sections
2.1-2.4), not from soma's code, in float64:
  - the T-step IF/LIF simulation of a feedback net with reset by subtraction
    (test u >= V, leak after the reset), the (weighted) average rate a_T of
    the last hidden layer;
  - the equilibrium map f(a) = a_H, a_1 = clamp((W a + F x + b1)/V, 0, 1),
    a_k = clamp((S_k a_{k-1} + b_k)/V, 0, 1), its fixed point a* by iteration;
  - the implicit gradient: beta = (I - J^T)^-1 dL/da by a dense per-sample
    solve (J from autograd), then autograd of <f(a, theta), beta> plus the
    readout's own gradient; at a_T (what the rule computes) and at a*;
  - at a*, the same gradient by autograd through K unrolled iterations of
    the map from a = 0 (BPTT through the rate map), which must agree;
  - spectral norm: one power iteration from the stored u, v before use,
    W = clamp(alpha, -c, c) w / (u^T w v); the largest singular value by SVD.
  - the convolutional form (ConvCase): F = conv (+ bias) + batchnorm with
    the batch statistics of F x (fixed through the simulation, the map and
    J; in the autograd graph of the parameter VJP; the running statistics
    updated once, notes 2.5), W a conv kernel (C, C, K, K), stride 1, pad
    K/2, no bias, applied to the (C, H, W) rate map; the spectral norm on the
    conv operator (power iteration with conv2d and its adjoint
    conv_transpose2d), checked against the SVD of the operator's matrix;
    the readout a dense layer on the flattened rates.
  - spike input (SpikeCase, the conv form on T binary frames x_t): layer 1
    gets F x_t at step t; the map f takes x-bar = sum_t lambda^(T-1-t) x_t /
    sum_k lambda^k (the rates' weighting, notes 2.2); F's batchnorm uses the
    batch statistics of F x-bar (biased variance, eps 1e-5), applied to every
    step's F x_t and in the graph of f (notes 2.5; soma's normalisation, not
    the authors' unbiased one with eps 1e-8 in the simulation); the running
    statistics updated once, from F x-bar.
  - variational dropout (the "drop" and "mlconv" cases, notes 2.6): one
    mask of 0 or 1/(1-p) per element of F's output (after its batchnorm),
    of every S_k's (after its batchnorm) and of W's, drawn here and stored
    in the fixture ("mask.<k>", "mask.fb"), the same at every step, in f
    and in J;
  - the multi-layer conv form (MLConvCase, AlexNet-F in small): F = conv +
    batchnorm (batch statistics of F x), S_k = conv + bias [+ batchnorm],
    W = a transposed conv (torch's conv_transpose2d: stride s = h_1/h_H, pad
    (K-1)/2, output padding s - 1) from the last hidden map to the first,
    with the spectral norm on that operator (power iteration with
    conv_transpose2d and its adjoint conv2d); S_k's batchnorm in the authors'
    three modes (notes 2.5): running statistics in the simulation and in J
    (after their update), batch statistics in the map whose VJP gives the
    parameter gradient (the running statistics updated once from it).  The
    Jacobian is taken at a_T (soma's choice; the authors': at f(a_T)).
    Without S_k batchnorm the gradient is exact and checked against autograd
    through the unrolled map and against finite differences.
The simulation is checked to stay at least MARGIN away from every threshold
test so that float32 rounding in C cannot flip a spike.

Run with Debian's interpreter:  /usr/bin/python3 refs/ide_ref.py tests/fixtures [case ...]
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402

torch.set_default_dtype(torch.float64)
MARGIN = 1e-4


def adjoint_solve(c, a, W, g):
    """beta_i = (I - J_i^T)^-1 g_i per sample, J_i the rate map's Jacobian at a (dense solve)."""
    beta = torch.zeros_like(g)
    for i in range(c.B):
        J = c.jac_sample(a, W, i)
        beta[i] = torch.linalg.solve(torch.eye(J.shape[0]) - J.t(), g[i])
    return beta


def add_vjp(c, out, z, beta, pp, a, W, g):
    """out += beta^T dz/dtheta (z = f(a) on the parameters pp); the solve's largest residual."""
    gf = torch.autograd.grad((z * beta).sum(), list(pp.values()), allow_unused=True)
    for k, gr in zip(pp, gf):
        if gr is not None:
            out[k] = out[k] + gr
    res = max(float((beta[i] - c.jac_sample(a, W, i).t() @ beta[i] - g[i]).norm())
              for i in range(c.B))
    return out, res


def normalize(x):
    return x / max(float(x.norm()), 1e-12)


class Case:
    def __init__(self, name, sizes, T, leak, sn, seed, B=4, c=1.0, V=2.0, drop=0.0):
        self.name, self.sizes, self.T, self.leak, self.sn, self.B, self.c, self.V = \
            name, sizes, T, leak, sn, B, c, V
        self.drop = drop
        g = torch.Generator().manual_seed(seed)
        self.H = len(sizes) - 2
        L = self.H + 1
        n = sizes
        self.p = {}
        # dense layer k (1-based) is net layer 2(k-1) in "n0-n1-...-C"
        for k in range(1, L + 1):
            scale = 1.2 if k == 1 else 0.9
            self.p["%d.weight" % (2 * (k - 1))] = (torch.rand(n[k], n[k - 1], generator=g) - 0.3) * scale
            self.p["%d.bias" % (2 * (k - 1))] = torch.rand(n[k], generator=g) * 0.6 - 0.1
        w = torch.rand(n[1], n[self.H], generator=g) * 2 - 1
        w = w / w.norm(dim=1, keepdim=True)
        self.p["0.weight_fb"] = w * (1.0 if sn else 0.4)
        self.buf = {}
        if sn:
            self.p["0.weight_fb_g"] = torch.tensor([0.8])
            self.buf["0.weight_fb_u"] = normalize(torch.randn(n[1], generator=g))
            self.buf["0.weight_fb_v"] = normalize(torch.randn(n[self.H], generator=g))
        self.x = torch.rand(B, n[0], generator=g)
        self.y = torch.randint(0, n[-1], (B,), generator=g)
        # dropout masks: layer k's output (k = 1: F's), and W's ("fb"); all ones without
        self.mask = {k: torch.ones(B, n[k]) for k in range(1, self.H + 1)}
        self.mask["fb"] = torch.ones(B, n[1])
        if drop > 0:
            for k in list(range(1, self.H + 1)) + ["fb"]:
                m = self.mask[k]
                self.mask[k] = (torch.rand(m.shape, generator=g) >= drop).double() / (1 - drop)

    # -- the feedback weight ------------------------------------------------
    def weff(self, p, u, v):
        if not self.sn:
            return p["0.weight_fb"]
        w = p["0.weight_fb"]
        sigma = u @ w @ v
        return p["0.weight_fb_g"].clamp(-self.c, self.c)[0] * w / sigma

    def power_iter(self):
        w = self.p["0.weight_fb"]
        u, v = self.buf["0.weight_fb_u"], self.buf["0.weight_fb_v"]
        v = normalize(w.t() @ u)
        u = normalize(w @ v)
        return u, v

    # -- simulation ---------------------------------------------------------
    def simulate(self, W):
        p, H, V, lam = self.p, self.H, self.V, self.leak
        M = self.mask
        fx = (self.x @ p["0.weight"].t() + p["0.bias"]) * M[1]
        u = [None] + [torch.zeros(self.B, self.sizes[k]) for k in range(1, H + 1)]
        s = [None] + [torch.zeros(self.B, self.sizes[k]) for k in range(1, H + 1)]
        acc = torch.zeros(self.B, self.sizes[H])
        margin = float("inf")
        counts = torch.zeros(self.B, self.sizes[1])
        for t in range(self.T):
            inp = fx + ((s[H] @ W.t()) * M["fb"] if t > 0 else 0)
            for k in range(1, H + 1):
                if k > 1:
                    inp = (s[k - 1] @ p["%d.weight" % (2 * (k - 1))].t() + p["%d.bias" % (2 * (k - 1))]) * M[k]
                u[k] = u[k] + inp
                margin = min(margin, float((u[k] - V).abs().min()))
                s[k] = (u[k] >= V).double()
                u[k] = (u[k] - V * s[k]) * lam
            counts += s[1]
            acc = lam * acc + s[H]
        norm = sum(lam ** k for k in range(self.T))
        return acc / norm, margin, counts

    # -- the rate map and the loss ------------------------------------------
    def f(self, a, p, W):
        V, M = self.V, self.mask
        z = (((a @ W.t()) * M["fb"] + (self.x @ p["0.weight"].t() + p["0.bias"]) * M[1]) / V).clamp(0, 1)
        for k in range(2, self.H + 1):
            z = ((z @ p["%d.weight" % (2 * (k - 1))].t() + p["%d.bias" % (2 * (k - 1))]) * M[k] / V).clamp(0, 1)
        return z

    def loss(self, a, p):
        k = 2 * self.H
        logits = a @ p["%d.weight" % k].t() + p["%d.bias" % k]
        return torch.nn.functional.cross_entropy(logits, self.y)

    def implicit_grad(self, a, u, v):
        """Gradient of every parameter at rate point a, J taken at a."""
        p = {k: t.clone().requires_grad_(True) for k, t in self.p.items()}
        a0 = a.detach().clone().requires_grad_(True)
        L = self.loss(a0, p)
        grads = torch.autograd.grad(L, [a0] + list(p.values()), allow_unused=True)
        g = grads[0]
        out = {k: (gr if gr is not None else torch.zeros_like(p[k])) for k, gr in zip(p, grads[1:])}
        W = self.weff({k: t.detach() for k, t in self.p.items()}, u, v)
        beta = adjoint_solve(self, a, W, g)
        pp = {k: t.clone().requires_grad_(True) for k, t in self.p.items()}
        Wp = self.weff(pp, u, v)
        z = self.f(a.detach(), pp, Wp)
        return add_vjp(self, out, z, beta, pp, a, W, g)

    def jac_sample(self, a, W, i):
        x_all, m_all = self.x, self.mask

        def fi(ai):
            self.x = x_all[i:i + 1]
            self.mask = {k: m[i:i + 1] for k, m in m_all.items()}
            try:
                return self.f(ai[None], self.p, W)[0]
            finally:
                self.x, self.mask = x_all, m_all
        return torch.autograd.functional.jacobian(fi, a[i])

    def unrolled_grad(self, K, u, v):
        """BPTT through K iterations of the map from a = 0."""
        pp = {k: t.clone().requires_grad_(True) for k, t in self.p.items()}
        Wp = self.weff(pp, u, v)
        a = torch.zeros(self.B, self.sizes[self.H])
        for _ in range(K):
            a = self.f(a, pp, Wp)
        gr = torch.autograd.grad(self.loss(a, pp), list(pp.values()), allow_unused=True)
        return {k: (g if g is not None else torch.zeros_like(pp[k])) for k, g in zip(pp, gr)}


class OperatorSN:
    """The spectral norm on the feedback operator W_apply (adjoint Wt_apply) of a conv form."""

    def weff(self, p, u, v):
        if not self.sn:
            return p["0.weight_fb"]
        w = p["0.weight_fb"]
        sigma = (u * self.W_apply(w, v[None])[0]).sum()
        return p["0.weight_fb_g"].clamp(-self.c, self.c)[0] * w / sigma

    def power_iter(self):
        w = self.p["0.weight_fb"]
        u = self.buf["0.weight_fb_u"]
        v = normalize(self.Wt_apply(w, u[None])[0])
        u = normalize(self.W_apply(w, v[None])[0])
        return u, v

    def sn_matrix(self):
        return self.op_matrix()


class KernelSN:
    """The authors' spectral norm of a conv feedback (notes 2.4): sigma of the kernel w
    reshaped to (dim 0, rest), u of size dim 0, v of the rest; put before the case class
    (it re-draws u, v in those sizes from its own generator)."""
    sn_kernel = True

    def __init__(self, **kw):
        super().__init__(**kw)
        if self.sn:
            wm = self.p["0.weight_fb"].reshape(self.p["0.weight_fb"].shape[0], -1)
            g = torch.Generator().manual_seed(kw["seed"] + 17)
            self.buf["0.weight_fb_u"] = normalize(torch.randn(wm.shape[0], generator=g))
            self.buf["0.weight_fb_v"] = normalize(torch.randn(wm.shape[1], generator=g))

    def sn_matrix(self):
        return self.p["0.weight_fb"].reshape(self.p["0.weight_fb"].shape[0], -1)

    def weff(self, p, u, v):
        if not self.sn:
            return p["0.weight_fb"]
        w = p["0.weight_fb"]
        sigma = u @ w.reshape(w.shape[0], -1) @ v
        return p["0.weight_fb_g"].clamp(-self.c, self.c)[0] * w / sigma

    def power_iter(self):
        wm = self.sn_matrix()
        u = self.buf["0.weight_fb_u"]
        v = normalize(wm.t() @ u)
        u = normalize(wm @ v)
        return u, v


class ConvCase(OperatorSN, Case):
    """Single feedback layer over a conv input map: spec convKxC[sS][pP]-bn-N.
    Net layers: 0 conv, 1 bn, 2 act (unused), 3 flatten, 4 dense readout."""

    def __init__(self, name, in_shape, C, k, stride, pad, fb_k, ncls, T, leak, sn, seed, B=3,
                 c=1.0, V=2.0, bn=True):
        self.name, self.T, self.leak, self.sn, self.B, self.c, self.V = name, T, leak, sn, B, c, V
        self.bn, self.k, self.stride, self.pad, self.fb_k, self.C = bn, k, stride, pad, fb_k, C
        g = torch.Generator().manual_seed(seed)
        cin, hin, win = in_shape
        self.in_shape = in_shape
        oh = (hin + 2 * pad - k) // stride + 1
        ow = (win + 2 * pad - k) // stride + 1
        self.oh, self.ow = oh, ow
        n1 = C * oh * ow
        self.H = 1
        self.sizes = [cin * hin * win, n1, ncls]
        self.ro = 4 if bn else 3
        p = {}
        p["0.weight"] = (torch.rand(C, cin, k, k, generator=g) - 0.3) * 1.2
        p["0.bias"] = torch.rand(C, generator=g) * 0.6 - 0.1
        self.buf = {}
        if bn:
            p["1.weight"] = 0.8 + 0.6 * torch.rand(C, generator=g)
            p["1.bias"] = torch.rand(C, generator=g) * 0.8 + 0.4
            self.buf["1.running_mean"] = torch.rand(C, generator=g) * 0.2
            self.buf["1.running_var"] = 0.5 + torch.rand(C, generator=g)
        p["%d.weight" % self.ro] = (torch.rand(ncls, n1, generator=g) - 0.5) * 0.4
        p["%d.bias" % self.ro] = torch.rand(ncls, generator=g) * 0.2
        w = torch.rand(C, C, fb_k, fb_k, generator=g) * 2 - 1
        w = w / w.reshape(C, -1).norm(dim=1)[:, None, None, None]
        p["0.weight_fb"] = w * (1.0 if sn else 0.3)
        if sn:
            p["0.weight_fb_g"] = torch.tensor([0.9])
            self.buf["0.weight_fb_u"] = normalize(torch.randn(n1, generator=g))
            self.buf["0.weight_fb_v"] = normalize(torch.randn(n1, generator=g))
        self.p = p
        self.x = torch.rand(B, cin * hin * win, generator=g)
        self.y = torch.randint(0, ncls, (B,), generator=g)

    # W as an operator on flattened (C, oh, ow) maps, and its adjoint
    def W_apply(self, W, a):
        z = a.reshape(-1, self.C, self.oh, self.ow)
        return torch.nn.functional.conv2d(z, W, padding=self.fb_k // 2).reshape(a.shape[0], -1)

    def Wt_apply(self, W, a):
        z = a.reshape(-1, self.C, self.oh, self.ow)
        return torch.nn.functional.conv_transpose2d(z, W, padding=self.fb_k // 2).reshape(a.shape[0], -1)

    def op_matrix(self):
        n1 = self.sizes[1]
        return self.W_apply(self.p["0.weight_fb"], torch.eye(n1)).t()   # column j = W e_j

    def Fx(self, p, x=None):
        x = self.x if x is None else x
        z = torch.nn.functional.conv2d(x.reshape(-1, *self.in_shape), p["0.weight"], p["0.bias"],
                                       stride=self.stride, padding=self.pad)
        if self.bn:   # batch statistics of F x (biased variance), no running update here
            z = torch.nn.functional.batch_norm(z, None, None, p["1.weight"], p["1.bias"], True, 0.0, 1e-5)
        return z.reshape(z.shape[0], -1)

    def simulate(self, W):
        V, lam = self.V, self.leak
        fx = self.Fx(self.p)
        u = torch.zeros_like(fx)
        s = torch.zeros_like(fx)
        acc = torch.zeros_like(fx)
        margin = float("inf")
        counts = torch.zeros_like(fx)
        for t in range(self.T):
            u = u + fx + (self.W_apply(W, s) if t > 0 else 0)
            margin = min(margin, float((u - V).abs().min()))
            s = (u >= V).double()
            u = (u - V * s) * lam
            counts += s
            acc = lam * acc + s
        norm = sum(lam ** k for k in range(self.T))
        return acc / norm, margin, counts

    def f(self, a, p, W):
        return ((self.W_apply(W, a) + self.Fx(p)) / self.V).clamp(0, 1)

    def loss(self, a, p):
        logits = a @ p["%d.weight" % self.ro].t() + p["%d.bias" % self.ro]
        return torch.nn.functional.cross_entropy(logits, self.y)

    def jac_sample(self, a, W, i):
        # J of sample i: diag(mask) W / V; F x does not depend on a (batch statistics frozen)
        fx = self.Fx(self.p)[i].detach()

        def fi(ai):
            return ((self.W_apply(W, ai[None])[0] + fx) / self.V).clamp(0, 1)
        return torch.autograd.functional.jacobian(fi, a[i])

    def running_after(self):
        z = torch.nn.functional.conv2d(self.x.reshape(-1, *self.in_shape), self.p["0.weight"],
                                       self.p["0.bias"], stride=self.stride, padding=self.pad)
        rm, rv = self.buf["1.running_mean"].clone(), self.buf["1.running_var"].clone()
        torch.nn.functional.batch_norm(z, rm, rv, None, None, True, 0.1, 1e-5)
        return rm, rv


class SpikeCase(ConvCase):
    """The conv form on spike input: T binary frames per sample (2x6x6 like a
    small N-MNIST), stored sample-major, frame t contiguous: x (B, T*n0)."""

    def __init__(self, density=0.35, **kw):
        super().__init__(**kw)
        g = torch.Generator().manual_seed(kw["seed"] * 7919 + 1)
        n0 = self.sizes[0]
        self.frames = (torch.rand(self.B, self.T, n0, generator=g) < density).double()
        w = torch.tensor([self.leak ** (self.T - 1 - t) for t in range(self.T)])
        self.x = (w[None, :, None] * self.frames).sum(1) / w.sum()   # x-bar: f's input

    def batch_stats(self):
        z = torch.nn.functional.conv2d(self.x.reshape(-1, *self.in_shape), self.p["0.weight"],
                                       self.p["0.bias"], stride=self.stride, padding=self.pad)
        return z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)

    def current(self, t):
        """F x_t (+ bias), then F's batchnorm with the statistics of F x-bar."""
        p = self.p
        z = torch.nn.functional.conv2d(self.frames[:, t].reshape(-1, *self.in_shape), p["0.weight"],
                                       p["0.bias"], stride=self.stride, padding=self.pad)
        if self.bn:
            m, var = self.batch_stats()
            z = (z - m[None, :, None, None]) / torch.sqrt(var + 1e-5)[None, :, None, None]
            z = z * p["1.weight"][None, :, None, None] + p["1.bias"][None, :, None, None]
        return z.reshape(z.shape[0], -1)

    def simulate(self, W, constant=False):
        V, lam = self.V, self.leak
        cur = [self.current(t) for t in range(self.T)]
        # F is affine: the weighted average of the currents is f's input F x-bar
        w = [lam ** (self.T - 1 - t) for t in range(self.T)]
        avg = sum(wt * c for wt, c in zip(w, cur)) / sum(w)
        assert float((avg - self.Fx(self.p)).abs().max()) < 1e-12
        if constant:   # x-bar as a constant current: what spike input must differ from
            cur = [avg] * self.T
        u = torch.zeros_like(cur[0])
        s = torch.zeros_like(u)
        acc = torch.zeros_like(u)
        margin = float("inf")
        counts = torch.zeros_like(u)
        for t in range(self.T):
            u = u + cur[t] + (self.W_apply(W, s) if t > 0 else 0)
            margin = min(margin, float((u - V).abs().min()))
            s = (u >= V).double()
            u = (u - V * s) * lam
            counts += s
            acc = lam * acc + s
        norm = sum(lam ** k for k in range(self.T))
        return acc / norm, margin, counts

    def seed_ok(self, W, a_T):
        a_c, _, _ = self.simulate(W, constant=True)
        return float((a_c - a_T).abs().max()) > 0.05

    def extra(self):
        return {"x": self.frames.reshape(self.B, -1), "xbar": self.x}, {"frames": 1}


class MLConvCase(OperatorSN):
    """The multi-layer conv form: conv layers 1..H (F = layer 1 from the input,
    S_k = layer k from layer k-1), each conv + bias [+ batchnorm], a transposed
    conv feedback (C_H, C_1, K, K) from layer H's map to layer 1's, a dense
    readout on layer H's flattened rates.  Spec conv..-[bn-]conv..-[bn-]..-N;
    net layer indices as soma numbers them (conv, [bn], act per conv, then
    flatten, dense)."""

    def __init__(self, name, in_shape, layers, fb_k, ncls, T, leak, sn, seed, B=3, c=1.0, V=2.0,
                 drop=0.0, wscale=1.0):
        self.name, self.T, self.leak, self.sn, self.B, self.c, self.V = name, T, leak, sn, B, c, V
        self.in_shape, self.layers, self.fb_k, self.drop = in_shape, layers, fb_k, drop
        g = torch.Generator().manual_seed(seed)
        self.H = len(layers)
        shapes = [in_shape]
        self.idx, self.bnidx, i = [], [], 0
        for (C, k, st, pd, bn) in layers:
            ci, h, w = shapes[-1]
            shapes.append((C, (h + 2 * pd - k) // st + 1, (w + 2 * pd - k) // st + 1))
            self.idx.append(i)
            i += 1
            self.bnidx.append(i if bn else None)
            i += 2 if bn else 1   # [bn], act
        self.ro = i + 1           # flatten, dense
        self.shapes = shapes
        self.sizes = [int(np.prod(sh)) for sh in shapes] + [ncls]
        (C1, h1, w1), (CH, hH, wH) = shapes[1], shapes[-1]
        self.stride = h1 // hH
        assert h1 == self.stride * hH and w1 == self.stride * wH
        p, buf = {}, {}
        for k, (C, ks, st, pd, bn) in enumerate(layers, 1):
            cin = shapes[k - 1][0]
            sc = (1.2 if k == 1 else 0.9) * wscale
            p["%d.weight" % self.idx[k - 1]] = (torch.rand(C, cin, ks, ks, generator=g) - 0.3) * sc / ks
            p["%d.bias" % self.idx[k - 1]] = torch.rand(C, generator=g) * 0.6 - 0.1
            if bn:
                j = self.bnidx[k - 1]
                p["%d.weight" % j] = (0.8 if k == 1 else 0.5) + 0.6 * torch.rand(C, generator=g)
                p["%d.bias" % j] = torch.rand(C, generator=g) * 0.8 + (0.4 if k == 1 else 0.2)
                buf["%d.running_mean" % j] = torch.rand(C, generator=g) * 0.2
                buf["%d.running_var" % j] = 0.5 + torch.rand(C, generator=g)
        nH = self.sizes[self.H]
        p["%d.weight" % self.ro] = (torch.rand(ncls, nH, generator=g) - 0.5) * 0.4
        p["%d.bias" % self.ro] = torch.rand(ncls, generator=g) * 0.2
        K = fb_k
        w = torch.rand(CH, C1, K, K, generator=g) * 2 - 1
        w = w / w.transpose(0, 1).reshape(C1, -1).norm(dim=1)[None, :, None, None]  # weight[:, j] unit
        p["0.weight_fb"] = w * (1.0 if sn else 0.3)
        if sn:
            p["0.weight_fb_g"] = torch.tensor([0.9])
            buf["0.weight_fb_u"] = normalize(torch.randn(self.sizes[1], generator=g))
            buf["0.weight_fb_v"] = normalize(torch.randn(nH, generator=g))
        self.p, self.buf = p, buf
        self.x = torch.rand(B, self.sizes[0], generator=g)
        self.y = torch.randint(0, ncls, (B,), generator=g)
        self.mask = {k: torch.ones(B, self.sizes[k]) for k in range(1, self.H + 1)}
        self.mask["fb"] = torch.ones(B, self.sizes[1])
        if drop > 0:
            for k in list(range(1, self.H + 1)) + ["fb"]:
                m = self.mask[k]
                self.mask[k] = (torch.rand(m.shape, generator=g) >= drop).double() / (1 - drop)
        self.run = {k: v_.clone() for k, v_ in buf.items()}   # running statistics now

    # -- operators on flattened maps ------------------------------------------
    def W_apply(self, W, a):   # the transposed conv: layer H's map -> layer 1's
        CH, hH, wH = self.shapes[-1]
        s, pd = self.stride, (self.fb_k - 1) // 2
        z = torch.nn.functional.conv_transpose2d(a.reshape(-1, CH, hH, wH), W, stride=s, padding=pd,
                                                 output_padding=s - 1)
        assert z.shape[1:] == self.shapes[1]
        return z.reshape(a.shape[0], -1)

    def Wt_apply(self, W, e):  # its adjoint: the conv layer 1 -> layer H
        s, pd = self.stride, (self.fb_k - 1) // 2
        z = torch.nn.functional.conv2d(e.reshape(-1, *self.shapes[1]), W, stride=s, padding=pd)
        return z.reshape(e.shape[0], -1)

    def op_matrix(self):
        return self.W_apply(self.p["0.weight_fb"], torch.eye(self.sizes[self.H])).t()   # (n1, nH)

    def lin(self, k, p, z):
        C, ks, st, pd, bn = self.layers[k - 1]
        i = self.idx[k - 1]
        y = torch.nn.functional.conv2d(z.reshape(-1, *self.shapes[k - 1]), p["%d.weight" % i],
                                       p["%d.bias" % i], stride=st, padding=pd)
        return y

    def bn(self, k, p, y, mode, update=False):
        """mode 'batch': batch statistics (biased), optionally the running update
        (momentum 0.1, unbiased variance); 'run': the running statistics."""
        j = self.bnidx[k - 1]
        if j is None:
            return y
        g_, b_ = p["%d.weight" % j], p["%d.bias" % j]
        rm, rv = self.run["%d.running_mean" % j], self.run["%d.running_var" % j]
        if mode == "run":
            return torch.nn.functional.batch_norm(y, rm, rv, g_, b_, False, 0.0, 1e-5)
        if update:
            torch.nn.functional.batch_norm(y.detach(), rm, rv, None, None, True, 0.1, 1e-5)
        return torch.nn.functional.batch_norm(y, None, None, g_, b_, True, 0.0, 1e-5)

    def Fx(self, p, update=False):
        """D_F BN_1(F x + b_1), BN with the batch statistics of F x (fixed in the simulation, f, J)."""
        y = self.bn(1, p, self.lin(1, p, self.x), "batch", update)
        return y.reshape(self.B, -1) * self.mask[1]

    def simulate(self, W):
        V, lam, H, M = self.V, self.leak, self.H, self.mask
        fx = self.Fx(self.p)
        u = [None] + [torch.zeros(self.B, self.sizes[k]) for k in range(1, H + 1)]
        s = [None] + [torch.zeros(self.B, self.sizes[k]) for k in range(1, H + 1)]
        acc = torch.zeros(self.B, self.sizes[H])
        margin = float("inf")
        for t in range(self.T):
            for k in range(1, H + 1):
                if k == 1:
                    inp = fx + (self.W_apply(W, s[H]) * M["fb"] if t > 0 else 0)
                else:   # S_k's batchnorm with the running statistics
                    inp = self.bn(k, self.p, self.lin(k, self.p, s[k - 1]), "run").reshape(self.B, -1) * M[k]
                u[k] = u[k] + inp
                margin = min(margin, float((u[k] - V).abs().min()))
                s[k] = (u[k] >= V).double()
                u[k] = (u[k] - V * s[k]) * lam
            acc = lam * acc + s[H]
        norm = sum(lam ** k for k in range(self.T))
        return acc / norm, margin, None

    def fmap(self, a, p, W, mode, fx=None, update=False, rows=None):
        """f(a): mode 'run' (S_k batchnorm on the running statistics: the map of the
        simulation and of J) or 'batch' (batch statistics: the VJP's map)."""
        V, M = self.V, self.mask
        if rows is not None:
            M = {k: m[rows] for k, m in M.items()}
        fx = self.Fx(p) if fx is None else fx
        z = ((self.W_apply(W, a) * M["fb"] + fx) / V).clamp(0, 1)
        for k in range(2, self.H + 1):
            y = self.bn(k, p, self.lin(k, p, z), mode, update).reshape(z.shape[0], -1)
            z = (y * M[k] / V).clamp(0, 1)
        return z

    def interior(self, a, W):
        """share of pre-activations / V in [0, 1] per layer of the running-statistics map"""
        V, M, out = self.V, self.mask, []
        z = (self.W_apply(W, a) * M["fb"] + self.Fx(self.p)) / V
        out.append(float(((z >= 0) & (z <= 1)).double().mean()))
        for k in range(2, self.H + 1):
            y = self.bn(k, self.p, self.lin(k, self.p, z.clamp(0, 1)), "run").reshape(z.shape[0], -1)
            z = y * M[k] / V
            out.append(float(((z >= 0) & (z <= 1)).double().mean()))
        return out

    def f(self, a, p, W):   # the map of the equilibrium (and of the finite differences)
        return self.fmap(a, p, W, "run")

    def loss(self, a, p):
        logits = a @ p["%d.weight" % self.ro].t() + p["%d.bias" % self.ro]
        return torch.nn.functional.cross_entropy(logits, self.y)

    def jac_sample(self, a, W, i):
        fx = self.Fx(self.p)[i:i + 1].detach()

        def fi(ai):
            return self.fmap(ai[None], self.p, W, "run", fx=fx, rows=slice(i, i + 1))[0]
        return torch.autograd.functional.jacobian(fi, a[i])

    def implicit_grad(self, a, u, v, update=False):
        """beta from J of the running-statistics map at a; then beta^T d f_batch / dtheta
        (the batch-statistics map; update: its running update first, as the rule's
        training map, before J)."""
        p = {k: t.clone().requires_grad_(True) for k, t in self.p.items()}
        a0 = a.detach().clone().requires_grad_(True)
        grads = torch.autograd.grad(self.loss(a0, p), [a0] + list(p.values()), allow_unused=True)
        g = grads[0]
        out = {k: (gr if gr is not None else torch.zeros_like(p[k])) for k, gr in zip(p, grads[1:])}
        pp = {k: t.clone().requires_grad_(True) for k, t in self.p.items()}
        Wp = self.weff(pp, u, v)
        z = self.fmap(a.detach(), pp, Wp, "batch", update=update)
        W = self.weff({k: t.detach() for k, t in self.p.items()}, u, v)
        beta = adjoint_solve(self, a, W, g)
        return add_vjp(self, out, z, beta, pp, a, W, g)

    def unrolled_grad(self, K, u, v):
        pp = {k: t.clone().requires_grad_(True) for k, t in self.p.items()}
        Wp = self.weff(pp, u, v)
        a = torch.zeros(self.B, self.sizes[self.H])
        for _ in range(K):
            a = self.f(a, pp, Wp)
        gr = torch.autograd.grad(self.loss(a, pp), list(pp.values()), allow_unused=True)
        return {k: (g if g is not None else torch.zeros_like(pp[k])) for k, g in zip(pp, gr)}

    def spec(self):
        toks = []
        for (C, k, st, pd, bn) in self.layers:
            toks.append("conv%dx%ds%dp%d" % (k, C, st, pd) + ("-bn" if bn else ""))
        return "-".join(toks + [str(self.sizes[-1])])


class KernelConvCase(KernelSN, ConvCase):
    pass


class KernelMLConvCase(KernelSN, MLConvCase):
    pass


def search_seed(case_args, cls, n, accept=None, fail=None):
    """The first seed from case_args["seed"] on (n tried) whose simulation stays MARGIN away
    from every threshold with rates not all equal, and that accept(c, W, a_T) takes (what it
    returns, when truthy, comes back as extra): c, seed, u, v, W, a_T, margin, counts, extra."""
    for seed in range(case_args["seed"], case_args["seed"] + n):
        c = cls(**dict(case_args, seed=seed))
        u, v = c.power_iter() if c.sn else (None, None)
        W = c.weff(c.p, u, v)
        a_T, margin, counts = c.simulate(W)
        if margin < MARGIN or float(a_T.min()) == float(a_T.max()):
            continue
        extra = accept(c, W, a_T) if accept is not None else True
        if not extra:
            continue
        return c, seed, u, v, W, a_T, margin, counts, extra
    raise SystemExit(fail or "no seed gives a margin above %g for %s" % (MARGIN, case_args["name"]))


def fixed_point(c, W, a, iters):
    """a* by iterating the map from a; asserts it is a fixed point to 1e-12."""
    for _ in range(iters):
        a = c.f(a, c.p, W)
    assert float((c.f(a, c.p, W) - a).abs().max()) < 1e-12
    return a


def implicit_grads(c, a_T, a_star, u, v):
    """The implicit gradient at a_T and at a* (the solves' residuals checked)."""
    g_T, res_T = c.implicit_grad(a_T, u, v)
    g_star, res_s = c.implicit_grad(a_star, u, v)
    assert res_T < 1e-10 and res_s < 1e-10
    return g_T, g_star


def check_unrolled(c, g_star, u, v):
    """The gradient at a* against autograd through 400 unrolled iterations of the map."""
    g_unr = c.unrolled_grad(400, u, v)
    for k in g_star:
        err = float((g_unr[k] - g_star[k]).abs().max())
        assert err < 1e-9 * max(1.0, float(g_star[k].abs().max())), (k, err)


def case_tensors(c, a_T, fa, a_star, W, g_T, g_star, counts=None):
    """The tensors every case stores: input, labels, rates, f(a_T), a*, spike counts (when
    given), W, the initial parameters and buffers, the gradients at a_T and at a*."""
    t = {"x": c.x, "y": c.y.int(), "rates": a_T, "fa": fa, "fixed": a_star, "weff": W}
    if counts is not None:
        t["count1"] = counts
    for k, v_ in c.p.items():
        t["init." + k] = v_
        t["grad." + k] = g_T[k]
        t["grad_fp." + k] = g_star[k]
    for k, v_ in c.buf.items():
        t["init." + k] = v_
    return t


def case_meta(c, spec, seed, margin, **more):
    """The metadata every case stores, then more (in its order)."""
    meta = {"spec": spec, "T": c.T, "leak": c.leak, "vth": c.V, "sn": int(c.sn), "sn_c": c.c,
            "seed": seed, "margin": "%.3g" % margin}
    if getattr(c, "sn_kernel", False):
        meta["sn_kernel"] = 1
    meta.update(more)
    return meta


def write_case(c, out_dir, t, meta, seed, margin, a_T, g_T, pre="", mid=""):
    """Writes tests' fixture ide_<name>.safetensors and prints a line about it (pre before
    the seed, mid before the rates)."""
    path = os.path.join(out_dir, "ide_%s.safetensors" % c.name)
    fixture.write(path, {k: np.asarray(v_.detach().numpy()) for k, v_ in t.items()}, meta)
    print("%s: %sseed %d, margin %.3g, %srates %s, |g| %.3g" % (
        path, pre, seed, margin, mid, np.round(a_T.numpy().ravel()[:6], 3),
        sum(float(v_.norm()) for v_ in g_T.values())))


def build_mlconv(case_args, out_dir, cls=None):
    def accept(c, W, a_T):
        if float(((a_T > 0) & (a_T < 1)).double().mean()) < 0.3:
            return None
        if min(c.interior(a_T, W)) < 0.3:   # J and the VJP not trivial in any layer
            return None
        # the rule's training map moves S_k's running statistics before J: do the same
        c.run = {k: v_.clone() for k, v_ in c.buf.items()}
        c.fmap(a_T, c.p, W, "batch", update=True)
        F_rm = {k: v_.clone() for k, v_ in c.run.items()}
        a = a_T.clone()
        for _ in range(3000):
            a = c.f(a, c.p, W)
        if not float((c.f(a, c.p, W) - a).abs().max()) < 1e-12:
            return None   # the map does not contract here
        return F_rm, a
    c, seed, u, v, W, a_T, margin, _, (F_rm, a_star) = search_seed(
        case_args, cls or MLConvCase, 400, accept, fail="no seed for %s" % case_args["name"])
    fa = c.f(a_T, c.p, W)
    exact = all(j is None for j in c.bnidx[1:])
    # gradients: the running statistics as they are after the batch's update (c.run)
    g_T, g_star = implicit_grads(c, a_T, a_star, u, v)
    if exact:   # one map: the gradient is exact (unrolled autograd, finite differences)
        check_unrolled(c, g_star, u, v)
        fd_check(c, a_star, g_star, u, v)
    t = case_tensors(c, a_T, fa, a_star, W, g_T, g_star)
    # running statistics after one training batch: F's from F x, S_k's from the training map
    run_after = dict(F_rm)
    j1 = c.bnidx[0]
    if j1 is not None:
        rm, rv = c.buf["%d.running_mean" % j1].clone(), c.buf["%d.running_var" % j1].clone()
        torch.nn.functional.batch_norm(c.lin(1, c.p, c.x), rm, rv, None, None, True, 0.1, 1e-5)
        run_after["%d.running_mean" % j1], run_after["%d.running_var" % j1] = rm, rv
    for k, v_ in run_after.items():
        if "running" in k:
            t["after." + k] = v_
    if c.sn:
        t["sigma_svd"] = torch.linalg.svdvals(c.sn_matrix())[:1]
    if c.drop > 0:
        for k, m in c.mask.items():
            t["mask.%s" % k] = m
    meta = case_meta(c, c.spec(), seed, margin, fb_k=c.fb_k, exact=int(exact),
                     in_c=c.in_shape[0], in_h=c.in_shape[1], in_w=c.in_shape[2])
    if c.drop > 0:
        meta["dropout"] = c.drop
    write_case(c, out_dir, t, meta, seed, margin, a_T, g_T, pre=c.spec() + " ",
               mid="interior %s, " % np.round(c.interior(a_T, W), 2))


def fd_check(c, a_star, g_star, u, v, iters=3000):
    """Central finite differences of the loss at the re-solved fixed point, along a
    random direction per parameter (u, v and the dropout masks held: the power
    iteration is not differentiated), against the implicit gradient at a*."""
    gd = torch.Generator().manual_seed(7)

    def loss_at_fp(p):
        Wp = c.weff(p, u, v)
        a = a_star.clone()
        for _ in range(iters):
            a = c.f(a, p, Wp)
        return float(c.loss(a, p))
    h = 1e-6
    for k in g_star:
        d = torch.randn(c.p[k].shape, generator=gd)
        pp = dict(c.p)
        pp[k] = c.p[k] + h * d
        lp = loss_at_fp(pp)
        pp[k] = c.p[k] - h * d
        lm = loss_at_fp(pp)
        fd, an = (lp - lm) / (2 * h), float((g_star[k] * d).sum())
        assert abs(fd - an) <= 1e-6 * max(1.0, abs(an)), (k, fd, an)


def build_conv(case_args, out_dir, cls=ConvCase):
    def accept(c, W, a_T):
        # a sizeable share of interior rates, so J is not trivial
        if float(((a_T > 0) & (a_T < 1)).double().mean()) < 0.3:
            return False
        return not hasattr(c, "seed_ok") or c.seed_ok(W, a_T)
    c, seed, u, v, W, a_T, margin, counts, _ = search_seed(case_args, cls, 200, accept)
    fa = c.f(a_T, c.p, W)
    a_star = fixed_point(c, W, a_T.clone(), 3000)
    g_T, g_star = implicit_grads(c, a_T, a_star, u, v)
    check_unrolled(c, g_star, u, v)
    fd_check(c, a_star, g_star, u, v)
    t = case_tensors(c, a_T, fa, a_star, W, g_T, g_star, counts)
    if c.bn:
        rm, rv = c.running_after()
        t["after.1.running_mean"], t["after.1.running_var"] = rm, rv
    if c.sn:
        t["sigma_svd"] = torch.linalg.svdvals(c.sn_matrix())[:1]
    spec = "conv%dx%ds%dp%d-%s%d" % (c.k, c.C, c.stride, c.pad, "bn-" if c.bn else "", c.sizes[-1])
    meta = case_meta(c, spec, seed, margin, fb_k=c.fb_k,
                     in_c=c.in_shape[0], in_h=c.in_shape[1], in_w=c.in_shape[2])
    if hasattr(c, "extra"):
        tx, mx = c.extra()
        t.update(tx)
        meta.update(mx)
    write_case(c, out_dir, t, meta, seed, margin, a_T, g_T)


def spec_of(sizes):
    return "-".join(str(s) for s in sizes)


def build(case_args, out_dir):
    c, seed, u, v, W, a_T, margin, counts, _ = search_seed(case_args, Case, 50)
    fa = c.f(a_T, c.p, W)
    a_star = fixed_point(c, W, a_T.clone(), 2000)
    g_T, g_star = implicit_grads(c, a_T, a_star, u, v)
    check_unrolled(c, g_star, u, v)
    if c.drop > 0:
        fd_check(c, a_star, g_star, u, v, iters=2000)
    t = case_tensors(c, a_T, fa, a_star, W, g_T, g_star, counts)
    if c.sn:
        t["sigma_svd"] = torch.linalg.svdvals(c.p["0.weight_fb"])[:1]
    meta = case_meta(c, spec_of(c.sizes), seed, margin)
    if c.drop > 0:
        meta["dropout"] = c.drop
        for k, m in c.mask.items():
            t["mask.%s" % k] = m
    write_case(c, out_dir, t, meta, seed, margin, a_T, g_T)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    cases = {
        "if": lambda: build(dict(name="if", sizes=[6, 5, 3], T=12, leak=1.0, sn=False, seed=0), out),
        "lif_ml": lambda: build(dict(name="lif_ml", sizes=[6, 5, 4, 3], T=9, leak=0.95, sn=True,
                                     seed=100), out),
        "conv_bn": lambda: build_conv(dict(name="conv_bn", in_shape=(1, 8, 8), C=4, k=3, stride=2,
                                           pad=1, fb_k=3, ncls=3, T=10, leak=0.95, sn=True,
                                           seed=200), out),
        # spike input: 2x6x6 binary frames, T 4, batch 2, conv F + batchnorm, LIF 0.95
        "spike": lambda: build_conv(dict(name="spike", in_shape=(2, 6, 6), C=4, k=3, stride=2,
                                         pad=1, fb_k=3, ncls=3, T=4, leak=0.95, sn=True, seed=300,
                                         B=2), out, cls=SpikeCase),
        # dropout 0.2 on F, S_2 and W of a multi-layer dense IF net (masks in the fixture)
        "drop": lambda: build(dict(name="drop", sizes=[6, 5, 4, 3], T=12, leak=1.0, sn=True, seed=400,
                                   drop=0.2), out),
        # the multi-layer conv form (AlexNet-F in small): 1x8x8 -> F conv3x4s2p1+bn 4x4x4 ->
        # S_2 conv3x6s2p1 6x2x2 -> S_3 conv3x5p1 5x2x2, transposed-conv feedback 5->4 stride 2
        # (2x2 -> 4x4), LIF 0.95, dropout 0.2, batch 3: exact (no S_k batchnorm)
        "mlconv": lambda: build_mlconv(dict(name="mlconv", in_shape=(1, 8, 8),
                                            layers=[(4, 3, 2, 1, True), (6, 3, 2, 1, False),
                                                    (5, 3, 1, 1, False)],
                                            fb_k=3, ncls=3, T=10, leak=0.95, sn=True, seed=500,
                                            drop=0.2), out),
        # the same with batchnorm on every S_k (the authors' three modes), IF, no dropout
        "mlconv_bn": lambda: build_mlconv(dict(name="mlconv_bn", in_shape=(1, 8, 8),
                                               layers=[(4, 3, 2, 1, True), (6, 3, 2, 1, True),
                                                       (5, 3, 1, 1, True)],
                                               fb_k=3, ncls=3, T=10, leak=1.0, sn=True, seed=600),
                                          out),
        # the authors' spectral norm of the reshaped kernel (ide-sn-kernel) on the single-layer
        # conv form and on the multi-layer one (transposed-conv feedback)
        "conv_kn": lambda: build_conv(dict(name="conv_kn", in_shape=(1, 8, 8), C=4, k=3, stride=2,
                                           pad=1, fb_k=3, ncls=3, T=10, leak=0.95, sn=True,
                                           seed=700), out, cls=KernelConvCase),
        "mlconv_kn": lambda: build_mlconv(dict(name="mlconv_kn", in_shape=(1, 8, 8),
                                               layers=[(4, 3, 2, 1, True), (6, 3, 2, 1, False),
                                                       (5, 3, 1, 1, False)],
                                               fb_k=3, ncls=3, T=10, leak=0.95, sn=True, seed=800,
                                               drop=0.2), out, cls=KernelMLConvCase),
    }
    for name in sys.argv[2:] or list(cases):   # optional case names after the directory
        cases[name]()


if __name__ == "__main__":
    main()
