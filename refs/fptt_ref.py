"""Golden values for soma's FPTT rule on a small LTC spiking RNN.

Independent reference, written from the equations of notes/fptt.md (2.1 LTC
neuron, 2.5 multi-Gaussian surrogate, 2.6 FPTT update); plain PyTorch
(autograd for the gradients, the regulariser differentiated as a scalar,
torch.nn.utils.clip_grad_norm_ and torch.optim.SGD for the step).

Net "4-rltc6-3" with the liquid readout (soma's layer list and tensor names):
  0 dense 4->6 + recurrent (0.weight, 0.bias, 0.weight_rec)
  1 LTC cell (1.tau_m.weight (6,12), 1.tau_m.bias, 1.tau_m.k (1,),
              1.tau_adp.weight, 1.tau_adp.bias, 1.tau_adp.k)
  2 dense 6->3 (2.weight, 2.bias)
  3 liquid LI readout (3.tau_m.weight (3,6), 3.tau_m.bias, 3.tau_m.k)

One step, every state starting at 0 (u, eta, s, o):
  I     = x_t W0^T + b0 + s_{t-1} R^T
  tau_m = sigmoid(k_m ([I, u_{t-1}] Wm^T + bm));  tau_a = sigmoid(k_a ([I, eta_{t-1}] Wa^T + ba))
  eta_t = tau_a eta_{t-1} + (1 - tau_a) s_{t-1};  theta_t = 0.1 + 1.8 eta_t
  v     = (1 - tau_m) u_{t-1} + tau_m I;  s_t = H(v - theta_t) (strict);  u_t = v (1 - s_t)
  z     = s_t W2^T + b2;  tau_o = sigmoid(k_o ([z, o_{t-1}] Wo^T + bo))
  o_t   = (1 - tau_o) o_{t-1} + tau_o z          (the logits of step t)
  dH/dx: gamma[(1+h) N(x;0,s) - h N(x;s,6s) - h N(x;-s,6s)], s 0.3, h 0.15, gamma 0.5

FPTT, P = T/K windows; window p runs K steps from the state left by the
previous window, detached (constant) at its start, and then
  L_p  = (p+1)/P CE(o_{last step}, y) + sum_W [ -<W, lam> + alpha/2 |W - Wbar|^2 ]
  g    = dL_p/dW;  clip_grad_norm_(all, 1.0);  SGD(lr): W -= lr g
  lam  = lam - alpha (W - Wbar);  Wbar = (1 - beta) Wbar + beta W - (beta/alpha) lam
alpha 0.1, beta 0.5, lr 0.1.  Wbar starts at W, lam at 0.

Fixtures:
  fptt_k1.safetensors: T = 3, K = 1 (three FPTT steps)
  fptt_k3.safetensors: T = 6, K = 3 (two FPTT-K windows)
Tensors: x (B,T,4) (as soma's frames encoding reads it: sample = T frames of
4), y (B,) int32, init.<p>; after window p: w<p>.<p>, wbar<p>.<p>, lam<p>.<p>,
u<p> / eta<p> (B,6) (the LTC state after the window's last step), loss<p>
(1,) the unweighted CE of the window's last step (before the update).

Robustness: seeds are drawn until every |v - theta| over all steps of both
runs is >= 1e-3, the hidden layer spikes on 10-60 % of its (neuron, step,
sample) triples, and a float64 rerun gives the same spikes.

Run with Debian's interpreter:  /usr/bin/python3 refs/fptt_ref.py tests/fixtures
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture  # noqa: E402

B, D, N, C = 2, 4, 6, 3
B0, BETA_A = 0.1, 1.8
ALPHA, BETA, LR, CLIP = 0.1, 0.5, 0.1, 1.0
SIG, HGT, SCL, GAM = 0.3, 0.15, 6.0, 0.5
MARGIN = 1e-3


def gauss(x, mu, sigma):
    return torch.exp(-((x - mu) ** 2) / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)


class Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        sg = GAM * ((1 + HGT) * gauss(x, 0.0, SIG) - HGT * gauss(x, SIG, SCL * SIG)
                    - HGT * gauss(x, -SIG, SCL * SIG))
        return g * sg


NAMES = ["0.weight", "0.bias", "0.weight_rec",
         "1.tau_m.weight", "1.tau_m.bias", "1.tau_m.k",
         "1.tau_adp.weight", "1.tau_adp.bias", "1.tau_adp.k",
         "2.weight", "2.bias",
         "3.tau_m.weight", "3.tau_m.bias", "3.tau_m.k"]


def draw(seed, T):
    g = torch.Generator().manual_seed(seed)

    def nrm(*shape, s=1.0):
        return torch.randn(*shape, generator=g) * s

    p = {
        "0.weight": nrm(N, D, s=1.2 / math.sqrt(D)),
        "0.bias": 0.3 + nrm(N, s=0.1),
        "0.weight_rec": nrm(N, N, s=0.5 / math.sqrt(N)),
        "1.tau_m.weight": nrm(N, 2 * N, s=math.sqrt(2.0 / (3 * N))),
        "1.tau_m.bias": nrm(N, s=0.1),
        "1.tau_m.k": 1.0 + nrm(1, s=0.2),
        "1.tau_adp.weight": nrm(N, 2 * N, s=math.sqrt(2.0 / (3 * N))),
        "1.tau_adp.bias": nrm(N, s=0.1),
        "1.tau_adp.k": 1.0 + nrm(1, s=0.2),
        "2.weight": nrm(C, N, s=1.0 / math.sqrt(N)),
        "2.bias": nrm(C, s=0.1),
        "3.tau_m.weight": nrm(C, 2 * C, s=math.sqrt(2.0 / (3 * C))),
        "3.tau_m.bias": nrm(C, s=0.1),
        "3.tau_m.k": 1.0 + nrm(1, s=0.2),
    }
    x = nrm(B, T, D)
    y = torch.randint(0, C, (B,), generator=g)
    return p, x, y


def step(p, xt, st, rec):
    u, eta, s, o = st
    I = xt @ p["0.weight"].T + p["0.bias"] + s @ p["0.weight_rec"].T
    tm = torch.sigmoid(p["1.tau_m.k"] * (torch.cat([I, u], 1) @ p["1.tau_m.weight"].T + p["1.tau_m.bias"]))
    ta = torch.sigmoid(p["1.tau_adp.k"] * (torch.cat([I, eta], 1) @ p["1.tau_adp.weight"].T
                                           + p["1.tau_adp.bias"]))
    eta = ta * eta + (1 - ta) * s
    th = B0 + BETA_A * eta
    am = 1 - tm
    v = am * u + (1 - am) * I
    rec.append((v - th).detach())
    s = Spike.apply(v - th)
    u = v * (1 - s)
    z = s @ p["2.weight"].T + p["2.bias"]
    to = torch.sigmoid(p["3.tau_m.k"] * (torch.cat([z, o], 1) @ p["3.tau_m.weight"].T + p["3.tau_m.bias"]))
    ao = 1 - to
    o = ao * o + (1 - ao) * z
    return (u, eta, s, o)


def fptt(p0, x, y, T, K, dtype=torch.float32):
    """Runs P = T/K FPTT windows; returns per-window records and the margins."""
    params = {k: v.clone().to(dtype).requires_grad_(True) for k, v in p0.items()}
    plist = [params[k] for k in NAMES]
    wbar = {k: v.detach().clone() for k, v in params.items()}
    lam = {k: torch.zeros_like(v) for k, v in params.items()}
    opt = torch.optim.SGD(plist, lr=LR)
    x = x.to(dtype)
    z = torch.zeros(B, N, dtype=dtype)
    st = (z, z.clone(), z.clone(), torch.zeros(B, C, dtype=dtype))
    P = T // K
    rec, out = [], []
    for w in range(P):
        st = tuple(a.detach() for a in st)
        for j in range(K):
            st = step(params, x[:, w * K + j], st, rec)
        ce = F.cross_entropy(st[3], y)
        reg = sum(-(params[k] * lam[k]).sum() + ALPHA / 2 * ((params[k] - wbar[k]) ** 2).sum() for k in NAMES)
        loss = (w + 1) / P * ce + reg
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plist, CLIP)
        opt.step()
        with torch.no_grad():
            for k in NAMES:
                lam[k] = lam[k] - ALPHA * (params[k] - wbar[k])
                wbar[k] = (1 - BETA) * wbar[k] + BETA * params[k] - (BETA / ALPHA) * lam[k]
        out.append(dict(w={k: v.detach().clone() for k, v in params.items()},
                        wbar={k: v.clone() for k, v in wbar.items()},
                        lam={k: v.clone() for k, v in lam.items()},
                        u=st[0].detach().clone(), eta=st[1].detach().clone(), loss=ce.detach().clone()))
    return out, rec


def build(T, K, seed0):
    for seed in range(seed0, seed0 + 2000):
        p, x, y = draw(seed, T)
        out, rec = fptt(p, x, y, T, K)
        v = torch.stack(rec)
        if v.abs().min().item() < MARGIN:
            continue
        rate = (v > 0).float().mean().item()
        if not (0.10 <= rate <= 0.60):
            continue
        _, rec64 = fptt(p, x, y, T, K, torch.float64)
        if not torch.equal(torch.stack(rec64) > 0, v > 0):
            continue
        t = {"x": x.numpy(), "y": y.numpy().astype(np.int32)}
        for k in NAMES:
            t["init." + k] = p[k].numpy()
        for w, o in enumerate(out):
            for k in NAMES:
                t["w%d.%s" % (w, k)] = o["w"][k].numpy()
                t["wbar%d.%s" % (w, k)] = o["wbar"][k].numpy()
                t["lam%d.%s" % (w, k)] = o["lam"][k].numpy()
            t["u%d" % w] = o["u"].numpy()
            t["eta%d" % w] = o["eta"].numpy()
            t["loss%d" % w] = o["loss"].reshape(1).numpy()
        meta = dict(spec="4-rltc6-3", T=T, K=K, alpha=ALPHA, beta=BETA, lr=LR, clip=CLIP, seed=seed,
                    spike_rate=round(rate, 3))
        print("T=%d K=%d: seed %d, spike rate %.2f, min margin %.2e, losses %s" % (
            T, K, seed, rate, v.abs().min().item(), [round(o["loss"].item(), 5) for o in out]))
        return t, meta
    raise SystemExit("no seed satisfied the robustness checks")


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    torch.set_default_dtype(torch.float32)
    for (T, K, name, seed0) in [(3, 1, "fptt_k1", 1000), (6, 3, "fptt_k3", 2000)]:
        t, meta = build(T, K, seed0)
        fixture.write(os.path.join(outdir, name + ".safetensors"), t, meta)


if __name__ == "__main__":
    main()
