"""Golden values for soma's predictive-coding rule (src/rule/pc.c) and MQ.

Independent reference, written from the equations of Alonso, Krichmar &
Neftci (2023) as pinned down in shared/notes/pc.md, in float64 PyTorch with
autograd for every vector-Jacobian product:

  states h_l (l = 1..L) are the outputs of the l-th dense/conv layer
  (pre-activations); block_l maps h_{l-1} to the prediction p_l:
      block_1(x) = W_0 x + b_0                    (no activation on the input)
      block_l(h) = W_{l-1} f(h) + b_{l-1}         (f = ReLU; conv, or flatten+dense)
  errors e_l = h_l - p_l (hidden), e_L = h_L - softmax(p_L) (top: cross-entropy)
  soft clamp h_L = (softmax(p_L) + beta y) / (1 + beta), recomputed after
  every iteration; hard clamp h_L = y
  dh_l = gamma/(1+t) * ( VJP(block_{l+1}, h_l, e_{l+1}) - e_l )
  simultaneous: all errors from one snapshot; sequential: top-down sweep,
  e_{l+1} recomputed from the already-updated h_{l+1}
  weight gradient (descent direction, grad of the batch-mean energy):
      dW_{l-1} = -VJP_W(block_l, h_{l-1}, e_l) / B
  incremental (iPC): at every iteration the weights take an SGD step on the
  gradient of the same snapshot's errors, the activities a simultaneous step.
  MQ: per weight matrix (weight + bias) a scalar v, init alpha;
      N += 1; step = alpha/(v + r) + lr_min; w -= step * g;
      rho = min(N/(N+1), rho_max); v = rho v + (1 - rho) mean|g|

Run with Debian's interpreter:  /usr/bin/python3 refs/pc_ref.py tests/fixtures
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402

torch.set_default_dtype(torch.float64)

GAMMA = 0.2      # larger than the paper's 0.05 so the errors are well above float32 round-off
BETA = 100.0
T = 3


class Block:
    """One prediction block: [f] -> [flatten] -> dense | conv."""

    def __init__(self, mod, act, flatten):
        self.mod, self.act, self.flatten = mod, act, flatten

    def __call__(self, h, W=None, b=None):
        W = self.mod.weight if W is None else W
        b = self.mod.bias if b is None else b
        a = torch.relu(h) if self.act else h
        if self.flatten:
            a = a.reshape(a.shape[0], -1)
        if isinstance(self.mod, nn.Linear):
            return a @ W.t() + b
        return F.conv2d(a, W, b, stride=self.mod.stride, padding=self.mod.padding)


def vjp_h(blk, h, cot):
    return torch.autograd.functional.vjp(lambda z: blk(z), h, cot)[1]


def weight_grads(blk, h_in, e, B):
    """Gradient of the batch-mean energy w.r.t. the block's W and b."""
    W = blk.mod.weight.detach().clone().requires_grad_(True)
    b = blk.mod.bias.detach().clone().requires_grad_(True)
    out = blk(h_in.detach(), W, b)
    (-(e.detach() * out).sum() / B).backward()
    return W.grad, b.grad


def clamp_top(pL, y1h, hard):
    s = torch.softmax(pL, dim=1)
    return y1h.clone() if hard else (s + BETA * y1h) / (1 + BETA)


def errors(blocks, h, preds):
    L = len(blocks)
    e = [None] * (L + 1)
    for l in range(1, L):
        e[l] = h[l] - preds[l]
    e[L] = h[L] - torch.softmax(preds[L], dim=1)
    return e


def infer(blocks, x, y1h, order, hard=False, Tn=T, lr_w=None, rec=None):
    """Returns final states h[0..L]; rec(t, h) is called after iteration t.
    order: 'sim', 'seq' or 'inc' (inc updates the block weights in place)."""
    L = len(blocks)
    with torch.no_grad():
        h = [x]
        for blk in blocks:
            h.append(blk(h[-1]))
    preds = [None] + [v.clone() for v in h[1:]]
    h[L] = clamp_top(preds[L], y1h, hard)
    B = x.shape[0]
    for t in range(Tn):
        g = GAMMA / (1 + t)
        if order in ("sim", "inc"):
            e = errors(blocks, h, preds)
            td = [None] + [vjp_h(blocks[l], h[l], e[l + 1]) for l in range(1, L)]
            if order == "inc":
                grads = [weight_grads(blocks[l - 1], h[l - 1], e[l], B) for l in range(1, L + 1)]
                with torch.no_grad():
                    for l in range(1, L + 1):
                        blocks[l - 1].mod.weight -= lr_w * grads[l - 1][0]
                        blocks[l - 1].mod.bias -= lr_w * grads[l - 1][1]
            for l in range(1, L):
                h[l] = h[l] + g * (td[l] - e[l])
        else:
            for l in range(L - 1, 0, -1):
                with torch.no_grad():
                    if l == L - 1:
                        e_up = h[L] - torch.softmax(blocks[L - 1](h[L - 1]), dim=1)
                    else:
                        e_up = h[l + 1] - blocks[l](h[l])
                    e_own = h[l] - blocks[l - 1](h[l - 1])
                td = vjp_h(blocks[l], h[l], e_up)
                h[l] = h[l] + g * (td - e_own)
        with torch.no_grad():
            preds = [None] + [blocks[l - 1](h[l - 1]) for l in range(1, L + 1)]
        h[L] = clamp_top(preds[L], y1h, hard)
        if rec:
            rec(t, h)
    return h, preds


def final_grads(blocks, h, preds):
    e = errors(blocks, h, preds)
    B = h[0].shape[0]
    return [weight_grads(blocks[l - 1], h[l - 1], e[l], B) for l in range(1, len(blocks) + 1)]


def mq_state(L, alpha):
    return {"v": [alpha] * L, "N": 0}


def mq_step(blocks, grads, st, alpha, r, lr_min, rho_max):
    st["N"] += 1
    N = st["N"]
    with torch.no_grad():
        for l, (blk, (gw, gb)) in enumerate(zip(blocks, grads)):
            step = alpha / (st["v"][l] + r) + lr_min
            blk.mod.weight -= step * gw
            blk.mod.bias -= step * gb
            rho = min(N / (N + 1), rho_max)
            m = torch.cat([gw.reshape(-1), gb.reshape(-1)]).abs().mean().item()
            st["v"][l] = rho * st["v"][l] + (1 - rho) * m


def record(name, make_seq, pnames, spec, shape, x, y, classes, outdir):
    """make_seq: nn.Sequential (soma's layer order); pnames: indices of its
    dense/conv layers; blocks get act=True except the first."""
    torch.manual_seed(3)
    seq0 = make_seq()
    init = {k: v.detach().clone() for k, v in seq0.state_dict().items()}
    out = {"x": x.numpy(), "y": y.numpy().astype(np.int32)}
    for k, v in init.items():
        out["init." + k] = v.numpy()
    y1h = F.one_hot(y, classes).double()

    def fresh():
        s = make_seq()
        s.load_state_dict(init)
        mods = [s[i] for i in pnames]
        blocks = []
        for j, m in enumerate(mods):
            flatten = j > 0 and isinstance(m, nn.Linear) and not isinstance(mods[j - 1], nn.Linear)
            blocks.append(Block(m, act=j > 0, flatten=flatten))
        return s, blocks

    L = len(pnames)
    for order in ("sim", "seq"):
        for hard in (False, True):
            tag = order + (".hard" if hard else "")
            s, blocks = fresh()

            def rec(t, h, tag=tag):
                for l in range(1, L + 1):
                    out["%s.t%d.h%d" % (tag, t + 1, l)] = h[l].detach().reshape(h[l].shape[0], -1).numpy()
            h, preds = infer(blocks, x, y1h, order, hard=hard, rec=rec)
            for l, (gw, gb) in enumerate(final_grads(blocks, h, preds)):
                out["%s.grad.%d.weight" % (tag, pnames[l])] = gw.numpy()
                out["%s.grad.%d.bias" % (tag, pnames[l])] = gb.numpy()
    # iPC with SGD (lr 0.1): the weights after one batch of T iterations
    s, blocks = fresh()
    infer(blocks, x, y1h, "inc", lr_w=0.1)
    for k, v in s.state_dict().items():
        out["inc.after." + k] = v.detach().numpy()
    # SeqIL + MQ, two training steps on the same batch
    alpha, r, lr_min, rho_max = 3e-3, 1e-6, 1e-3, 0.9999
    s, blocks = fresh()
    st = mq_state(L, alpha)
    for _ in range(2):
        h, preds = infer(blocks, x, y1h, "seq")
        mq_step(blocks, final_grads(blocks, h, preds), st, alpha, r, lr_min, rho_max)
    for k, v in s.state_dict().items():
        out["mq.after." + k] = v.detach().numpy()
    out["mq.v"] = np.array(st["v"])
    fixture.write(os.path.join(outdir, name + ".safetensors"), out,
                  {"spec": spec, "input": shape, "torch": torch.__version__, "T": T,
                   "gamma": GAMMA, "beta": BETA, "classes": classes,
                   "mq": "%g,%g,%g,%g" % (alpha, r, lr_min, rho_max), "inc_lr": 0.1})


def mq_flat(outdir):
    """The MQ optimizer alone on a flat array of two groups, two steps."""
    g = torch.Generator().manual_seed(5)
    sizes = [7, 5]
    w0 = torch.randn(12, generator=g)
    g1 = torch.randn(12, generator=g)
    g2 = torch.randn(12, generator=g) * 0.1
    alpha, r, lr_min, rho_max = 0.01, 1e-6, 1e-3, 0.999
    v = [alpha, alpha]
    w = w0.clone()
    out = {"w0": w0.numpy(), "g1": g1.numpy(), "g2": g2.numpy()}
    for N, gr in ((1, g1), (2, g2)):
        off = 0
        for k, n in enumerate(sizes):
            step = alpha / (v[k] + r) + lr_min
            w[off:off + n] -= step * gr[off:off + n]
            rho = min(N / (N + 1), rho_max)
            v[k] = rho * v[k] + (1 - rho) * gr[off:off + n].abs().mean().item()
            off += n
        out["w%d" % N] = w.clone().numpy()
        out["v%d" % N] = np.array(v)
    fixture.write(os.path.join(outdir, "pc_mq_flat.safetensors"), out,
                  {"sizes": "7,5", "mq": "%g,%g,%g,%g" % (alpha, r, lr_min, rho_max)})


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    g = torch.Generator().manual_seed(11)
    # MLP 12-10-9-8-4 (L = 4 weight matrices), inputs in [0, 1]
    x = torch.rand(5, 12, generator=g)
    y = torch.randint(0, 4, (5,), generator=g)
    record("pc_mlp",
           lambda: nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 9), nn.ReLU(),
                                 nn.Linear(9, 8), nn.ReLU(), nn.Linear(8, 4)),
           [0, 2, 4, 6], "12-10-9-8-4", "12,1,1", x, y, 4, outdir)
    # convnet: conv3x3s2 -> relu -> conv3x4 -> relu -> flatten -> fc3, input 2x9x9
    x = torch.rand(4, 2, 9, 9, generator=g) * 2 - 1
    y = torch.randint(0, 3, (4,), generator=g)
    record("pc_cnn",
           lambda: nn.Sequential(nn.Conv2d(2, 3, 3, stride=2), nn.ReLU(), nn.Conv2d(3, 4, 3),
                                 nn.ReLU(), nn.Flatten(), nn.Linear(16, 3)),
           [0, 2, 5], "conv3x3s2-conv3x4-fc3", "2,9,9", x, y, 3, outdir)
    mq_flat(outdir)
    print("wrote", outdir)


if __name__ == "__main__":
    main()
