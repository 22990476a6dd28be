"""Golden values for LFP through time on Heaviside LIF nets (src/rule/lfp_snn.c).

Written from the equations of docs/lfp.md / notes sec. 7, in float64 torch
tensors with explicit loops (no autograd: LFP is not a gradient).  All
cells: alpha 0.9, threshold 1, reset by subtraction, direct input for T
steps, soma's dynamics v_t = alpha u_{t-1} + I_t, s_t = [v_t > 1],
u_t = v_t - s_t.

1. Dense net 6-8-3: dense 6->8, LIF cell, dense 8->3, LIF output cell
   (spike readout).  Writes tests/fixtures/lfp_snn.safetensors.
2. Conv net (soma spec conv3x2-pool2-conv2x4-pool2-fc3 on 1x12x12 with
   --neuron lif --readout spike, i.e. soma's order conv - LIF - maxpool2,
   conv - LIF - maxpool2, flatten, fc - LIF).  The conv is written as a
   sum over its taps (forward: z = b + sum_{kh,kw} W[:, :, kh, kw] x shifted;
   backward: fb_W[:, :, kh, kw] = sum q x shifted, F_below = x (.) sum of
   W^T q shifted back); max pooling routes F to the first maximum of each
   window in row-major order, found by an explicit scan.  The layer list is
   generic, so the seed paper's order (conv - pool - LIF) is one list away.
   Writes tests/fixtures/lfp_snn_conv.safetensors; the same in the seed
   paper's order (conv - maxpool2 - LIF, spec conv3x2m2-...) to
   tests/fixtures/lfp_snn_conv_m.safetensors.

Each fixture: x, y, init.<param>, counts, and fb.<param> for denominator A
(|v_t|) and B (|u_t-1| + |v_t - u_t-1|).
Run: /usr/bin/python3 refs/lfp_snn_ref.py tests/fixtures
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402

torch.set_default_dtype(torch.float64)
ALPHA, TH, T, B = 0.9, 1.0, 6, 4


def forward(W0, b0, W2, b2, x):
    n1, n3 = W0.shape[0], W2.shape[0]
    u1 = torch.zeros(B, n1); u3 = torch.zeros(B, n3)
    tr = []
    for t in range(T):
        I1 = x @ W0.T + b0
        v1 = ALPHA * u1 + I1
        s1 = (v1 > TH).double()
        u1n = v1 - TH * s1
        I3 = s1 @ W2.T + b2
        v3 = ALPHA * u3 + I3
        s3 = (v3 > TH).double()
        u3n = v3 - TH * s3
        tr.append(dict(v1=v1, s1=s1, u1p=u1, v3=v3, s3=s3, u3p=u3))
        u1, u3 = u1n, u3n
    return tr


def feedback(W0, b0, W2, b2, x, y, tr, denom):
    C = W2.shape[0]
    counts = sum(d["s3"] for d in tr)
    h = T // 2
    fW0 = torch.zeros_like(W0); fb0 = torch.zeros_like(b0)
    fW2 = torch.zeros_like(W2); fb2 = torch.zeros_like(b2)
    carry1 = torch.zeros(B, W0.shape[0]); carry3 = torch.zeros(B, C)
    onehot = torch.nn.functional.one_hot(y, C).double()
    for t in reversed(range(T)):
        d = tr[t]
        r = torch.where(onehot > 0, 1 - torch.sigmoid(counts - h),
                        -d["s3"] * (1 - torch.sigmoid((T - counts) - h))) / T
        def cell(F, carry, v, up):
            q = F + carry
            D = (up.abs() + (v - up).abs()) if denom else v.abs()
            q = q / (D + 1e-6)
            return q, ALPHA * up * q
        q3, carry3 = cell(r, carry3, d["v3"], d["u3p"])
        fW2 += q3.T @ d["s1"]; fb2 += q3.sum(0)
        F1 = d["s1"] * (q3 @ W2)
        q1, carry1 = cell(F1, carry1, d["v1"], d["u1p"])
        fW0 += q1.T @ x; fb0 += q1.sum(0)
    return counts, {"0.weight": W0.abs() * fW0, "0.bias": b0.abs() * fb0,
                    "2.weight": W2.abs() * fW2, "2.bias": b2.abs() * fb2}


def dense_fixture(outdir):
    for seed in range(1, 200):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(B, 6, generator=g)
        y = torch.randint(0, 3, (B,), generator=g)
        W0 = torch.randn(8, 6, generator=g) * 0.6; b0 = torch.randn(8, generator=g) * 0.1
        W2 = torch.randn(3, 8, generator=g) * 0.8; b2 = torch.randn(3, generator=g) * 0.1 + 0.3
        tr = forward(W0, b0, W2, b2, x)
        margin = min(min((d["v1"] - TH).abs().min().item(), (d["v3"] - TH).abs().min().item()) for d in tr)
        r1 = sum(d["s1"].mean().item() for d in tr) / T
        r3 = sum(d["s3"].mean().item() for d in tr) / T
        if margin > 1e-3 and 0.1 < r1 < 0.6 and 0.1 < r3 < 0.7:
            break
    out = {"x": x, "y": y.int(), "init.0.weight": W0, "init.0.bias": b0,
           "init.2.weight": W2, "init.2.bias": b2}
    for denom, tag in ((0, "A"), (1, "B")):
        counts, fb = feedback(W0, b0, W2, b2, x, y, tr, denom)
        out["counts"] = counts
        for k, v in fb.items():
            out["fb%s.%s" % (tag, k)] = v
    fixture.write(os.path.join(outdir, "lfp_snn.safetensors"),
                  {k: v.numpy() for k, v in out.items()},
                  {"spec": "6-8-3", "T": T, "alpha": ALPHA, "threshold": TH, "seed": seed,
                   "margin": margin, "rates": "%.3f %.3f" % (r1, r3), "torch": torch.__version__})
    print("dense: seed", seed, "margin", margin, "rates", r1, r3)


# ---- conv nets: a generic list of layers ------------------------------------

def conv_fwd(x, W, b):
    """x (N,C,H,W), W (O,C,K,K), b (O): stride 1, no padding, as a sum over taps."""
    K = W.shape[2]
    OH, OW = x.shape[2] - K + 1, x.shape[3] - K + 1
    z = b[None, :, None, None].expand(x.shape[0], W.shape[0], OH, OW).clone()
    for kh in range(K):
        for kw in range(K):
            z += torch.einsum("oc,nchw->nohw", W[:, :, kh, kw], x[:, :, kh:kh + OH, kw:kw + OW])
    return z


def conv_bwd(q, x, W):
    """fb sums (before |W|): dW[o,c,kh,kw] = sum q[n,o,h,w] x[n,c,h+kh,w+kw],
    db = sum q; the input share t[n,c,h',w'] = sum W[o,c,kh,kw] q[n,o,h'-kh,w'-kw]."""
    K = W.shape[2]
    OH, OW = q.shape[2], q.shape[3]
    dW = torch.zeros_like(W)
    t = torch.zeros_like(x)
    for kh in range(K):
        for kw in range(K):
            dW[:, :, kh, kw] = torch.einsum("nohw,nchw->oc", q, x[:, :, kh:kh + OH, kw:kw + OW])
            t[:, :, kh:kh + OH, kw:kw + OW] += torch.einsum("oc,nohw->nchw", W[:, :, kh, kw], q)
    return dW, q.sum((0, 2, 3)), t


def pool_fwd(x, k):
    """Max pooling, stride k; idx[n,c,i,j] = flat h*W+w of the window's first maximum."""
    N, C, H, Wd = x.shape
    OH, OW = H // k, Wd // k
    y = torch.zeros(N, C, OH, OW)
    idx = torch.zeros(N, C, OH, OW, dtype=torch.long)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best, at = None, None
                    for a in range(k):
                        for b_ in range(k):
                            v = x[n, c, i * k + a, j * k + b_].item()
                            if best is None or v > best:
                                best, at = v, (i * k + a) * Wd + j * k + b_
                    y[n, c, i, j] = best
                    idx[n, c, i, j] = at
    return y, idx


def pool_bwd(F, idx, shape):
    out = torch.zeros(shape)
    N, C, OH, OW = F.shape
    flat = out.view(N, C, -1)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    flat[n, c, idx[n, c, i, j]] += F[n, c, i, j]
    return out


def net_forward(layers, params, x, T):
    """layers: list of ("conv", name) / ("pool", k) / ("lif",) / ("flatten",) /
    ("fc", name).  Returns the per-step trace: for each t a list with each
    layer's input and its step data."""
    state = {}
    trace = []
    for t in range(T):
        a = x
        steps = []
        for li, L in enumerate(layers):
            d = {"in": a}
            if L[0] == "conv":
                a = conv_fwd(a, params[L[1] + ".weight"], params[L[1] + ".bias"])
            elif L[0] == "fc":
                a = a @ params[L[1] + ".weight"].T + params[L[1] + ".bias"]
            elif L[0] == "pool":
                a, d["idx"] = pool_fwd(a, L[1])
            elif L[0] == "flatten":
                a = a.reshape(a.shape[0], -1)
            elif L[0] == "lif":
                up = state.get(li, torch.zeros_like(a))
                v = ALPHA * up + a
                s = (v > TH).to(v.dtype)
                state[li] = v - TH * s
                d.update(v=v, up=up)
                a = s
            d["out"] = a
            steps.append(d)
        trace.append(steps)
    return trace


def net_feedback(layers, params, y, trace, T, denom):
    C = trace[0][-1]["out"].shape[1]
    counts = sum(st[-1]["out"] for st in trace)
    h = T // 2
    onehot = torch.nn.functional.one_hot(y, C).to(counts.dtype)
    fb = {k: torch.zeros_like(v) for k, v in params.items()}
    carry = {}
    for t in reversed(range(T)):
        st = trace[t]
        S = st[-1]["out"]
        F = torch.where(onehot > 0, 1 - torch.sigmoid(counts - h),
                        -S * (1 - torch.sigmoid((T - counts) - h))) / T
        for li in reversed(range(len(layers))):
            L, d = layers[li], st[li]
            x = d["in"]
            if L[0] == "lif":
                q = F + carry.get(li, torch.zeros_like(F))
                D = (d["up"].abs() + (d["v"] - d["up"]).abs()) if denom else d["v"].abs()
                q = q / (D + 1e-6)
                carry[li] = ALPHA * d["up"] * q
                F = q
            elif L[0] == "fc":
                W = params[L[1] + ".weight"]
                fb[L[1] + ".weight"] += F.T @ x
                fb[L[1] + ".bias"] += F.sum(0)
                F = x * (F @ W)
            elif L[0] == "conv":
                dW, db, tin = conv_bwd(F, x, params[L[1] + ".weight"])
                fb[L[1] + ".weight"] += dW
                fb[L[1] + ".bias"] += db
                F = x * tin
            elif L[0] == "pool":
                F = pool_bwd(F, d["idx"], x.shape)
            elif L[0] == "flatten":
                F = F.reshape(x.shape)
    return counts, {k: params[k].abs() * v for k, v in fb.items()}


CONV_SPEC = "conv3x2-pool2-conv2x4-fc3"
CONV_LAYERS = [("conv", "0"), ("lif",), ("pool", 2), ("conv", "3"), ("lif",), ("flatten",),
               ("fc", "6"), ("lif",)]
# the seed paper's order, pool before the cell (soma spec convKxCmM): same
# layer indices, so the same parameter names
CONV_SPEC_M = "conv3x2m2-conv2x4-fc3"
CONV_LAYERS_M = [("conv", "0"), ("pool", 2), ("lif",), ("conv", "3"), ("lif",), ("flatten",),
                 ("fc", "6"), ("lif",)]
CONV_T, CONV_B, CONV_HW = 4, 2, 8


def conv_params(g):
    return {"0.weight": torch.randn(2, 1, 3, 3, generator=g) * 0.6,
            "0.bias": torch.randn(2, generator=g) * 0.1 + 0.3,
            "3.weight": torch.randn(4, 2, 2, 2, generator=g) * 0.6,
            "3.bias": torch.randn(4, generator=g) * 0.1 + 0.3,
            "6.weight": torch.randn(3, 16, generator=g) * 0.6,
            "6.bias": torch.randn(3, generator=g) * 0.1 + 0.3}


def conv_fixture(outdir, CONV_LAYERS=CONV_LAYERS, CONV_SPEC=CONV_SPEC, name="lfp_snn_conv"):
    for seed in range(1, 2000):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(CONV_B, 1, CONV_HW, CONV_HW, generator=g) * 2 - 1
        y = torch.randint(0, 3, (CONV_B,), generator=g)
        p = conv_params(g)
        tr = net_forward(CONV_LAYERS, p, x, CONV_T)
        cells = [i for i, L in enumerate(CONV_LAYERS) if L[0] == "lif"]
        margin = min((st[i]["v"] - TH).abs().min().item() for st in tr for i in cells)
        vmin = min(st[i]["v"].abs().min().item() for st in tr for i in cells)
        rates = [sum(st[i]["out"].mean().item() for st in tr) / CONV_T for i in cells]
        if margin > 1e-2 and vmin > 1.5e-2 and all(0.15 < r < 0.7 for r in rates):
            # the two denominators must disagree, or the test cannot tell them apart
            _, fa = net_feedback(CONV_LAYERS, p, y, tr, CONV_T, 0)
            _, fbb = net_feedback(CONV_LAYERS, p, y, tr, CONV_T, 1)
            diff = min(((fa[k] - fbb[k]).abs().max() / fa[k].abs().max()).item() for k in fa)
            if diff > 0.1:
                break
    else:
        raise SystemExit("conv: no seed gives moderate rates")
    out = {"x": x.reshape(CONV_B, -1), "y": y.int()}
    for k, v in p.items():
        out["init." + k] = v
    for denom, tag in ((0, "A"), (1, "B")):
        counts, fb = net_feedback(CONV_LAYERS, p, y, tr, CONV_T, denom)
        out["counts"] = counts
        for k, v in fb.items():
            out["fb%s.%s" % (tag, k)] = v
    fixture.write(os.path.join(outdir, name + ".safetensors"),
                  {k: v.numpy() for k, v in out.items()},
                  {"spec": CONV_SPEC, "input": "1x%dx%d" % (CONV_HW, CONV_HW), "T": CONV_T, "B": CONV_B, "alpha": ALPHA,
                   "threshold": TH, "seed": seed, "margin": margin, "vmin": vmin, "AB_diff": diff,
                   "rates": " ".join("%.3f" % r for r in rates), "torch": torch.__version__})
    print(name + ": seed", seed, "margin", margin, "vmin", vmin, "A/B diff", diff, "rates", rates)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    dense_fixture(outdir)
    conv_fixture(outdir)
    conv_fixture(outdir, CONV_LAYERS_M, CONV_SPEC_M, "lfp_snn_conv_m")


if __name__ == "__main__":
    main()
