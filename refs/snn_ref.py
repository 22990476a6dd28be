"""Golden values for soma's spiking networks trained with BPTT.

Independent reference: a hand-unrolled PyTorch model (no snnTorch), autograd
for the gradients, torch.optim.SGD for the step.  Two models:

  rlif  "8-r16-r12-5"  two recurrent LIF layers, LI readout, logits = mean_t o_t
  alif  "8-r16-5"      one recurrent ALIF layer, LI readout, logits = o_{T-1}

Layer list (soma's order; tensor names are "<layer index>.<name>"):
  rlif: 0 dense 8->16 + rec (0.weight, 0.bias, 0.weight_rec), 1 LIF,
        2 dense 16->12 + rec (2.weight, 2.bias, 2.weight_rec), 3 LIF,
        4 dense 12->5 (4.weight, 4.bias), 5 LI readout
  alif: 0 dense 8->16 + rec, 1 ALIF, 2 dense 16->5, 3 LI readout

Cell, per step t = 0..T-1, elementwise; every state starts at 0 (u, a, s, o):
  a_t  = rho a_{t-1} + (1 - rho) s_{t-1}          (ALIF; LIF: a = 0)
  th_t = threshold + beta_a a_t                   (LIF: th_t = threshold)
  I_t  = in_t W^T + b + s_{t-1} R^T               (R: the dense layer's weight_rec,
                                                   s: the spikes of the cell after it)
  v_t  = alpha u_{t-1} + I_t
  s_t  = H(v_t - th_t),  H(x) = 1 if x > 0 else 0 (strict: H(0) = 0)
  u_t  = v_t - th_t s_t                           (reset by subtraction, not detached:
                                                   gradient flows through th_t and s_t)
  LI readout: o_t = alpha o_{t-1} + z_t,  z_t = s_t W^T + b of the last hidden layer.
  dH/dx is replaced by the fast sigmoid 1 / (slope |x| + 1)^2, slope 25.
Loss: cross-entropy of the logits (mean over the batch).

Truncated BPTT (k = 5): the forward is unchanged; before computing step
t = 5, 10, 15 every carried state (u, a, s of each cell and the readout's o)
is detached, so the segments [0,4], [5,9], [10,14], [15,19] pass no gradient
to one another.  Note s_{t-1} is carried state: the recurrent input
s_{t-1} R^T and the adaptation a_t of the first step of a segment see it as a
constant.  The readout's mean over t still sums all T steps.

Fixture tensors (per model): x (B,T,8), y (B,) int32, init.<p>, trace.u1 /
trace.s1 (T,B,16) [u is the post-reset membrane u_t], rlif: trace.u2 /
trace.s2 (T,B,12), alif: trace.a1 / trace.th1 (T,B,16), trace.o (T,B,5),
logits (B,5), loss (1,), grad.<p>, grad_tbptt5.<p>, sgd.after.<p> (one
SGD(lr=0.1, momentum=0.9) step from init with grad.<p>), sgd.loss2 (1,)
(full forward at sgd.after).

Robustness: the inputs and weights are drawn from a seeded torch.Generator;
a draw is rejected (next seed) unless min |v_t - th_t| over every hidden
neuron, step and sample is >= 1e-3 both at init and after the SGD step (so a
float32 implementation that sums in another order cannot flip a spike), each
hidden layer spikes on 5-40% of its (neuron, step, sample) triples, and a
float64 recompute of both forwards gives the identical spike pattern.

Self-check: with a smooth stand-in for H (sigmoid(k x), its exact derivative
as the "surrogate", float64), the autograd gradient (full BPTT, and truncated
BPTT against finite differences of the forward whose boundary states are
clamped to constants) must match central finite differences.

Run with Debian's interpreter:  /usr/bin/python3 refs/snn_ref.py tests/fixtures
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture  # noqa: E402

torch.set_default_dtype(torch.float32)

B, T, D_IN, N_OUT = 4, 20, 8, 5
SLOPE = 25.0
MIN_MARGIN = 1e-3
RATE_LO, RATE_HI = 0.05, 0.40
TBPTT_K = 5
LR, MOMENTUM = 0.1, 0.9

MODELS = {
    "rlif": dict(spec="8-r16-r12-5", neuron="lif", hidden=[16, 12], alpha=0.9,
                 threshold=1.0, rho=0.95, beta_a=0.0, readout_alpha=0.9,
                 reduce="mean", seed0=100,
                 # draw scales: x ~ N(0, xs^2); W ~ N(0, (ws/sqrt(fan_in))^2), ...
                 xs=1.0, ws=[1.5, 2.25], rs=[0.5, 0.5], bs=0.05, os=0.5),
    "alif": dict(spec="8-r16-5", neuron="alif", hidden=[16], alpha=0.9,
                 threshold=0.5, rho=0.95, beta_a=1.8, readout_alpha=0.9,
                 reduce="last", seed0=200,
                 xs=1.0, ws=[1.0], rs=[0.5], bs=0.05, os=0.5),
}


# ---------------------------------------------------------------- spike fns
class FastSigmoidSpike(torch.autograd.Function):
    """Forward: strict Heaviside (x > 0).  Backward: g / (slope |x| + 1)^2."""

    @staticmethod
    def forward(ctx, x, slope):
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (ctx.slope * x.abs() + 1.0) ** 2, None


class SmoothSpike(torch.autograd.Function):
    """Self-check stand-in: forward sigmoid(k x), backward its exact derivative."""

    @staticmethod
    def forward(ctx, x, k):
        s = torch.sigmoid(k * x)
        ctx.save_for_backward(s)
        ctx.k = k
        return s

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return g * ctx.k * s * (1.0 - s), None


def fast_sigmoid(x):
    return FastSigmoidSpike.apply(x, SLOPE)


# ---------------------------------------------------------------- the model
def param_names(cfg):
    names = []
    for i in range(len(cfg["hidden"])):
        names += ["%d.weight" % (2 * i), "%d.bias" % (2 * i), "%d.weight_rec" % (2 * i)]
    L = 2 * len(cfg["hidden"])
    return names + ["%d.weight" % L, "%d.bias" % L]


def draw(cfg, seed):
    """x, y and the initial parameters from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D_IN, generator=g) * cfg["xs"]
    y = torch.randint(0, N_OUT, (B,), generator=g)
    p = {}
    fan = D_IN
    for i, n in enumerate(cfg["hidden"]):
        L = 2 * i
        p["%d.weight" % L] = torch.randn(n, fan, generator=g) * (cfg["ws"][i] / fan ** 0.5)
        p["%d.bias" % L] = torch.randn(n, generator=g) * cfg["bs"]
        p["%d.weight_rec" % L] = torch.randn(n, n, generator=g) * (cfg["rs"][i] / n ** 0.5)
        fan = n
    L = 2 * len(cfg["hidden"])
    p["%d.weight" % L] = torch.randn(N_OUT, fan, generator=g) * (cfg["os"] / fan ** 0.5)
    p["%d.bias" % L] = torch.randn(N_OUT, generator=g) * cfg["bs"]
    return x, y, p


def forward(cfg, p, x, spike=fast_sigmoid, detach_at=(), clamp=None, capture=None):
    """Unrolled forward.  Returns logits and a dict of traces (lists over t).

    detach_at: steps before which every carried state is detached (TBPTT).
    clamp:     {t: states} replaces the carried states by these constants
               before step t instead of detaching (finite-difference check).
    capture:   {} filled with {t: detached copies of the carried states}
               for t in detach_at.
    Carried state: [u, a, s] per hidden layer, then the readout's o.
    """
    dt = x.dtype
    nh = len(cfg["hidden"])
    alpha, thr = cfg["alpha"], cfg["threshold"]
    rho, beta_a = cfg["rho"], cfg["beta_a"]
    alif = cfg["neuron"] == "alif"
    state = []
    for n in cfg["hidden"]:
        state += [torch.zeros(B, n, dtype=dt)] * 3
    state.append(torch.zeros(B, N_OUT, dtype=dt))
    tr = {k: [] for k in ("u", "s", "a", "th", "m", "o")}
    for k in tr:
        if k != "o":
            tr[k] = [[] for _ in range(nh)]
    outs = []
    for t in range(T):
        if t in detach_at:
            if capture is not None:
                capture[t] = [s_.detach().clone() for s_ in state]
            if clamp is not None:
                state = list(clamp[t])
            else:
                state = [s_.detach() for s_ in state]
        inp = x[:, t]
        new = []
        for i in range(nh):
            u, a, s = state[3 * i:3 * i + 3]
            L = 2 * i
            I = inp @ p["%d.weight" % L].t() + p["%d.bias" % L] + s @ p["%d.weight_rec" % L].t()
            if alif:
                a = rho * a + (1.0 - rho) * s
                th = thr + beta_a * a
            else:
                th = torch.full_like(I, thr)
            v = alpha * u + I
            m = v - th
            s = spike(m)
            u = v - th * s
            new += [u, a, s]
            for k, val in (("u", u), ("s", s), ("a", a), ("th", th), ("m", m)):
                tr[k][i].append(val)
            inp = s
        L = 2 * nh
        z = inp @ p["%d.weight" % L].t() + p["%d.bias" % L]
        o = cfg["readout_alpha"] * state[-1] + z
        new.append(o)
        outs.append(o)
        tr["o"].append(o)
        state = new
    if cfg["reduce"] == "mean":
        logits = torch.stack(outs).mean(0)
    else:
        logits = outs[-1]
    return logits, tr


def stack(lst):
    return torch.stack(lst).detach()


def loss_and_grads(cfg, p, x, y, **kw):
    q = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
    logits, tr = forward(cfg, q, x, **kw)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return loss.detach(), logits.detach(), {k: v.grad.detach().clone() for k, v in q.items()}, tr


def margin(tr):
    return min(stack(m).abs().min().item() for m in tr["m"])


def spikes(tr):
    return [stack(s).numpy() for s in tr["s"]]


def f64(p):
    return {k: v.detach().double() for k, v in p.items()}


def tbptt_boundaries():
    return tuple(range(TBPTT_K, T, TBPTT_K))   # (5, 10, 15)


# ---------------------------------------------------------------- one model
def build(name, cfg):
    """Finds a seed whose draw meets the margin/rate/float64 conditions; returns
    the fixture dict and metadata."""
    for seed in range(cfg["seed0"], cfg["seed0"] + 500):
        x, y, p = draw(cfg, seed)
        loss, logits, grads, tr = loss_and_grads(cfg, p, x, y)
        m1 = margin(tr)
        rates = [float(s.mean()) for s in spikes(tr)]
        if m1 < MIN_MARGIN or not all(RATE_LO <= r <= RATE_HI for r in rates):
            continue
        # one SGD(momentum) step with torch.optim, then the second forward
        q = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
        opt = torch.optim.SGD([q[k] for k in param_names(cfg)], lr=LR, momentum=MOMENTUM)
        lg, _ = forward(cfg, q, x)
        F.cross_entropy(lg, y).backward()
        opt.step()
        after = {k: v.detach().clone() for k, v in q.items()}
        with torch.no_grad():
            lg2, tr2 = forward(cfg, after, x)
            loss2 = F.cross_entropy(lg2, y)
        m2 = margin(tr2)
        if m2 < MIN_MARGIN:
            continue
        # float64 recompute of both forwards: identical spike pattern
        with torch.no_grad():
            lg64, tr64 = forward(cfg, f64(p), x.double())
            _, tr64b = forward(cfg, f64(after), x.double())
        same = all(np.array_equal(a, b) for a, b in zip(spikes(tr), spikes(tr64))) and \
            all(np.array_equal(a, b) for a, b in zip(spikes(tr2), spikes(tr64b)))
        if not same:
            continue
        break
    else:
        raise SystemExit("%s: no seed met the conditions" % name)
    assert all(np.array_equal(a, b) for a, b in zip(spikes(tr), spikes(tr64)))
    assert all(np.array_equal(a, b) for a, b in zip(spikes(tr2), spikes(tr64b)))
    assert min(m1, m2) >= MIN_MARGIN

    # float64 gradients, for information (how far float32 round-off moves them)
    loss64, _, g64, _ = loss_and_grads(cfg, f64(p), x.double(), y)
    gdiff = max(((grads[k].double() - g64[k]).abs().max() /
                 g64[k].abs().max().clamp_min(1e-30)).item() for k in grads)

    # truncated BPTT (forward unchanged)
    loss_t, logits_t, gt, _ = loss_and_grads(cfg, p, x, y, detach_at=tbptt_boundaries())
    assert torch.equal(loss_t, loss) and torch.equal(logits_t, logits)
    tdiff = max((gt[k] - grads[k]).abs().max().item() for k in grads)
    assert tdiff > 0, "truncation changed nothing"

    # momentum's first step is plain SGD: after = init - lr*grad
    for k in p:
        assert torch.allclose(after[k], p[k] - LR * grads[k], rtol=0, atol=1e-6)

    out = {"x": x.numpy(), "y": y.numpy().astype(np.int32)}
    for k in param_names(cfg):
        out["init." + k] = p[k].numpy()
        out["grad." + k] = grads[k].numpy()
        out["grad_tbptt5." + k] = gt[k].numpy()
        out["sgd.after." + k] = after[k].numpy()
    for i in range(len(cfg["hidden"])):
        out["trace.u%d" % (i + 1)] = stack(tr["u"][i]).numpy()
        out["trace.s%d" % (i + 1)] = stack(tr["s"][i]).numpy()
        if cfg["neuron"] == "alif":
            out["trace.a%d" % (i + 1)] = stack(tr["a"][i]).numpy()
            out["trace.th%d" % (i + 1)] = stack(tr["th"][i]).numpy()
    out["trace.o"] = stack(tr["o"]).numpy()
    out["logits"] = logits.numpy()
    out["loss"] = np.array([loss.item()], dtype=np.float32)
    out["sgd.loss2"] = np.array([loss2.item()], dtype=np.float32)

    meta = {"spec": cfg["spec"], "neuron": cfg["neuron"], "T": str(T), "B": str(B),
            "readout": "li", "reduce": cfg["reduce"], "alpha": repr(cfg["alpha"]),
            "threshold": repr(cfg["threshold"]), "rho": repr(cfg["rho"]),
            "beta_a": repr(cfg["beta_a"]), "readout_alpha": repr(cfg["readout_alpha"]),
            "reset": "subtract", "detach_reset": "0", "input_scale": "0",
            "surrogate": "fast-sigmoid", "slope": "25", "margin": "%.6g" % min(m1, m2),
            "margin_init": "%.6g" % m1, "margin_sgd": "%.6g" % m2,
            "tbptt": str(TBPTT_K), "tbptt_detach_before": ",".join(map(str, tbptt_boundaries())),
            "lr": repr(LR), "momentum": repr(MOMENTUM), "seed": str(seed),
            "rates": ",".join("%.4f" % r for r in rates), "torch": torch.__version__}
    print("%s: seed %d, spike rates %s, after SGD %s" % (
        name, seed, ", ".join("%.3f" % r for r in rates),
        ", ".join("%.3f" % float(s.mean()) for s in spikes(tr2))))
    print("%s: margin min|v-th| init %.4g, after SGD %.4g; loss %.6f -> %.6f; "
          "float64 loss %.6f; max rel |g32-g64| %.2e; max |g_tbptt - g| %.3g" % (
              name, m1, m2, loss.item(), loss2.item(), loss64.item(), gdiff, tdiff))
    return out, meta, (x, y, p)


# ---------------------------------------------------------------- self-checks
def check_surrogate():
    x = torch.tensor([-0.3, -0.01, 0.0, 0.01, 0.2], dtype=torch.float64, requires_grad=True)
    s = fast_sigmoid(x)
    assert s.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0], s   # H(0) = 0
    s.sum().backward()
    want = 1.0 / (SLOPE * x.detach().abs() + 1.0) ** 2
    assert torch.allclose(x.grad, want, rtol=1e-15, atol=0)


def fd_check(name, cfg, x, y, p, k=8.0, eps=1e-5, tol=1e-5):
    """Autograd vs central differences in float64 with H -> sigmoid(k x)."""
    def smooth(m):
        return SmoothSpike.apply(m, k)
    x = x.double()
    p = f64(p)
    names = param_names(cfg)
    # full BPTT
    _, _, g, _ = loss_and_grads(cfg, p, x, y, spike=smooth)
    # truncated BPTT: gradient of the forward with boundary states clamped
    bnd = tbptt_boundaries()
    cap = {}
    with torch.no_grad():
        forward(cfg, p, x, spike=smooth, detach_at=bnd, capture=cap)
    _, _, gt, _ = loss_and_grads(cfg, p, x, y, spike=smooth, detach_at=bnd)
    worst = {"bptt": 0.0, "tbptt": 0.0}

    def L(q, clamp):
        with torch.no_grad():
            kw = dict(detach_at=bnd, clamp=cap) if clamp else {}
            lg, _ = forward(cfg, q, x, spike=smooth, **kw)
            return F.cross_entropy(lg, y).item()

    # clamping the boundary states to their captured values is the same forward
    assert L(p, True) == L(p, False)
    for mode, grads, clamp in (("bptt", g, False), ("tbptt", gt, True)):
        for nm in names:
            fd = torch.zeros_like(p[nm])
            flat = p[nm].view(-1)
            for j in range(flat.numel()):
                old = flat[j].item()
                flat[j] = old + eps
                lp = L(p, clamp)
                flat[j] = old - eps
                lm = L(p, clamp)
                flat[j] = old
                fd.view(-1)[j] = (lp - lm) / (2 * eps)
            ad = grads[nm]
            scale = ad.abs().max().item()
            rel = ((fd - ad).abs() / torch.maximum(torch.maximum(fd.abs(), ad.abs()),
                                                   torch.full_like(ad, 1e-3 * scale + 1e-12)))
            worst[mode] = max(worst[mode], rel.max().item())
    print("%s: finite-difference check (float64, H -> sigmoid(%g x)): max rel err "
          "BPTT %.2e, TBPTT(k=%d, clamped boundaries) %.2e" % (
              name, k, worst["bptt"], TBPTT_K, worst["tbptt"]))
    assert worst["bptt"] < tol and worst["tbptt"] < tol, worst
    gdiff = max((gt[n] - g[n]).abs().max().item() for n in names)
    assert gdiff > 1e-6, "truncation had no effect in the smooth model"


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    torch.set_num_threads(1)
    check_surrogate()
    draws = {}
    for name, cfg in MODELS.items():
        out, meta, draws[name] = build(name, cfg)
        path = os.path.join(outdir, "snn_%s.safetensors" % name)
        fixture.write(path, out, meta)
        back, _ = fixture.read(path)
        assert sorted(back) == sorted(out)
        print("wrote %s (%d bytes, %d tensors)" % (path, os.path.getsize(path), len(out)))
    for name, cfg in MODELS.items():
        fd_check(name, cfg, *draws[name])


if __name__ == "__main__":
    main()
