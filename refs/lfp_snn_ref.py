"""Golden values for LFP through time on a Heaviside LIF net (src/rule/lfp_snn.c).

Written from the equations of docs/lfp.md / notes sec. 7, in float64 torch
tensors with explicit loops (no autograd: LFP is not a gradient).  Net
6-8-3: dense 6->8, LIF cell, dense 8->3, LIF output cell (spike readout),
alpha 0.9, threshold 1, reset by subtraction, direct input for T steps.
Writes tests/fixtures/lfp_snn.safetensors: x, y, init.<param>, counts, and
fb.<param> for denominator A (|v_t|) and B (|u_t-1| + |v_t - u_t-1|).
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


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
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
    print("seed", seed, "margin", margin, "rates", r1, r3)


if __name__ == "__main__":
    main()
