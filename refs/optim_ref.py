"""Golden numbers for soma's optimizers and learning-rate schedules.

Run with Debian's interpreter (it has python3-torch):
    /usr/bin/python3 refs/optim_ref.py tests/fixtures

Writes <dir>/optim.safetensors (see refs/fixture.py for the format):

  w0                (N,)     initial parameters, mixed signs, a few exact zeros
  grads             (S,N)    the gradient fed at each step (fixed, not w-dependent:
                             an optimizer's update only sees g, so this is enough)
  lrs               (S,)     the learning rate set before each step; it changes every
                             step so the C side must honour the per-call lr argument
  opt.<cfg>.hyper   (8,)     [momentum, dampening, nesterov, weight_decay,
                              beta1, beta2, eps, kind]  kind: 0 sgd, 1 adam, 2 adamax
  opt.<cfg>.w       (S,N)    parameters after every step
  opt.<cfg>.<state> (N,)     torch's per-parameter state after the last step,
                             under torch's own name (momentum_buffer, exp_avg, ...)
  sched.<name>.lr   (E,)     the lr in force during epochs 0..E-1
  sched.<name>.args (k,)     the schedule's arguments (see SCHEDULES below)

torch semantics confirmed by this run (torch 1.13 _single_tensor_* code paths):
  SGD    : d = g + wd*w; buf = d on the FIRST step (no dampening), then
           buf = m*buf + (1-damp)*d; d = d + m*buf (nesterov) or buf; w -= lr*d
  Adam   : d = g + wd*w; m, v EMAs; step_size = lr/(1-b1^t) (double);
           denom = sqrt(v)/sqrt(1-b2^t) + eps; w -= step_size * m/denom
  Adamax : d = g + wd*w; m EMA; u = max(b2*u, |d| + eps); w -= lr/(1-b1^t) * m/u
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture  # noqa: E402

N = 37          # odd, not a multiple of any SIMD width
STEPS = 5
EPOCHS = 12
BASE_LR = 0.1

KIND = {"sgd": 0, "adam": 1, "adamax": 2}

# name -> (kind, torch kwargs).  Keys are the fixture names the C test iterates.
CONFIGS = {
    "sgd":          ("sgd", dict()),
    "sgd_mom":      ("sgd", dict(momentum=0.9)),
    "sgd_nesterov": ("sgd", dict(momentum=0.9, nesterov=True)),
    "sgd_damp":     ("sgd", dict(momentum=0.9, dampening=0.1)),
    "sgd_wd_mom":   ("sgd", dict(momentum=0.9, weight_decay=1e-2)),
    "sgd_wd":       ("sgd", dict(weight_decay=1e-2)),
    "adam":         ("adam", dict()),
    "adam_wd":      ("adam", dict(weight_decay=1e-2)),
    "adam_betas":   ("adam", dict(betas=(0.8, 0.99), eps=1e-6)),
    "adamax":       ("adamax", dict()),
    "adamax_wd":    ("adamax", dict(weight_decay=1e-2)),
    "adamax_betas": ("adamax", dict(betas=(0.7, 0.95), eps=1e-4)),
}

TORCH_DEFAULTS = {
    "sgd": dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0),
    "adam": dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    "adamax": dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
}

STATE_NAMES = {"sgd": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq"],
               "adamax": ["exp_avg", "exp_inf"]}


def make_inputs():
    rng = np.random.default_rng(20240611)
    w0 = rng.normal(0.0, 1.0, N).astype(np.float32)
    grads = rng.normal(0.0, 0.5, (STEPS, N)).astype(np.float32)
    # Spread magnitudes over three decades so eps and |g| interact in Adam/Adamax.
    grads *= np.float32(10.0) ** rng.integers(-2, 1, (STEPS, N)).astype(np.float32)
    grads[:, 3] = 0.0          # a parameter that never gets a gradient
    grads[1:3, 7] = 0.0        # one that loses it for two steps
    lrs = np.array([0.1, 0.05, 0.08, 0.02, 0.1], dtype=np.float32)
    return w0, grads, lrs


def run_optimizer(kind, kwargs, w0, grads, lrs):
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
           "adamax": torch.optim.Adamax}[kind]
    opt = cls([p], lr=float(lrs[0]), foreach=False, **kwargs)
    ws = []
    for s in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = float(lrs[s])
        p.grad = torch.from_numpy(grads[s].copy())
        opt.step()
        ws.append(p.detach().numpy().copy())
    state = {}
    for name in STATE_NAMES[kind]:
        t = opt.state[p].get(name)
        if t is not None:      # plain SGD keeps no momentum buffer
            state[name] = t.detach().numpy().copy()
    if kind != "sgd":
        assert int(opt.state[p]["step"]) == STEPS
    return np.stack(ws), state


def hyper(kind, kwargs):
    h = dict(TORCH_DEFAULTS[kind])
    h.update(kwargs)
    betas = h.get("betas", (0.0, 0.0))
    return np.array([h.get("momentum", 0.0), h.get("dampening", 0.0),
                     1.0 if h.get("nesterov", False) else 0.0, h["weight_decay"],
                     betas[0], betas[1], h.get("eps", 0.0), KIND[kind]], dtype=np.float32)


# Mirrors of the update rules in float64, written from the notes above, so this
# script fails loudly if torch's semantics ever differ from what soma implements.
def mirror(kind, h, w0, grads, lrs):
    mom, damp, nest, wd, b1, b2, eps, _ = [float(x) for x in h]
    w = w0.astype(np.float64)
    a = np.zeros(N)
    b = np.zeros(N)
    out = []
    for s in range(STEPS):
        t = s + 1
        d = grads[s].astype(np.float64) + wd * w
        lr = float(lrs[s])
        if kind == "sgd":
            if mom != 0:
                a = d.copy() if t == 1 else mom * a + (1 - damp) * d
                d = d + mom * a if nest else a
            w = w - lr * d
        elif kind == "adam":
            a = b1 * a + (1 - b1) * d
            b = b2 * b + (1 - b2) * d * d
            denom = np.sqrt(b) / math.sqrt(1 - b2 ** t) + eps
            w = w - lr / (1 - b1 ** t) * a / denom
        else:
            a = b1 * a + (1 - b1) * d
            b = np.maximum(b2 * b, np.abs(d) + eps)
            w = w - lr / (1 - b1 ** t) * a / b
        out.append(w.copy())
    return np.stack(out)


# name -> (constructor, args stored for the C side)
WARMUP = 4
SCHEDULES = {
    # args: [step_size, gamma]
    "step": (lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
             [2, 0.5]),
    # args: [gamma, milestones...]
    "multistep": (lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5],
                                                                 gamma=0.1),
                  [0.1, 2, 5]),
    # args: [t_max, eta_min]; 12 epochs > T_max=10 shows torch's curve rising again
    "cosine": (lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10,
                                                                    eta_min=1e-4),
               [10, 1e-4]),
    # args: [warmup]: LinearLR(start_factor=1/W, end_factor=1, total_iters=W)
    "warmup": (lambda o: torch.optim.lr_scheduler.LinearLR(
        o, start_factor=1.0 / WARMUP, end_factor=1.0, total_iters=WARMUP), [WARMUP]),
    # warmup then step decay, multiplied (ChainedScheduler); args: [warmup, step, gamma]
    "warmup_step": (lambda o: torch.optim.lr_scheduler.ChainedScheduler([
        torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0 / WARMUP, end_factor=1.0,
                                          total_iters=WARMUP),
        torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)]), [WARMUP, 3, 0.5]),
    # warmup then cosine, args: [warmup, t_max].  eta_min must be 0 here: with
    # eta_min > 0 torch's recursive cosine does not chain as a product.
    "warmup_cosine": (lambda o: torch.optim.lr_scheduler.ChainedScheduler([
        torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0 / WARMUP, end_factor=1.0,
                                          total_iters=WARMUP),
        torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.0)]), [WARMUP, 10]),
}


def run_schedule(make):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=BASE_LR)
    sched = make(opt)
    lrs = []
    for _ in range(EPOCHS):
        lrs.append(opt.param_groups[0]["lr"])   # the lr this epoch's steps use
        opt.step()
        sched.step()
    return np.array(lrs, dtype=np.float64)


def closed_form(name, args):
    """What soma_schedule_lr computes at the start of epoch e (t = e)."""
    out = []
    for e in range(EPOCHS):
        if name == "step":
            lr = BASE_LR * args[1] ** (e // args[0])
        elif name == "multistep":
            lr = BASE_LR * args[0] ** sum(1 for m in args[1:] if m <= e)
        elif name == "cosine":
            lr = args[1] + (BASE_LR - args[1]) * (1 + math.cos(math.pi * e / args[0])) / 2
        elif name == "warmup":
            s = 1.0 / args[0]
            lr = BASE_LR * (s + (1 - s) * min(e, args[0]) / args[0])
        elif name == "warmup_step":
            s = 1.0 / args[0]
            lr = BASE_LR * (s + (1 - s) * min(e, args[0]) / args[0]) * args[2] ** (e // args[1])
        else:
            s = 1.0 / args[0]
            lr = (BASE_LR * (s + (1 - s) * min(e, args[0]) / args[0])
                  * (1 + math.cos(math.pi * e / args[1])) / 2)
        out.append(lr)
    return np.array(out)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    w0, grads, lrs = make_inputs()
    tensors = {"w0": w0, "grads": grads, "lrs": lrs}
    for cfg, (kind, kwargs) in CONFIGS.items():
        ws, state = run_optimizer(kind, kwargs, w0, grads, lrs)
        h = hyper(kind, kwargs)
        ref = mirror(kind, h, w0, grads, lrs)
        err = np.max(np.abs(ws - ref) / (np.abs(ref) + 1e-3))
        assert err < 1e-5, (cfg, err)
        tensors["opt.%s.w" % cfg] = ws
        tensors["opt.%s.hyper" % cfg] = h
        for name, v in state.items():
            tensors["opt.%s.%s" % (cfg, name)] = v
    for name, (make, args) in SCHEDULES.items():
        got = run_schedule(make)
        want = closed_form(name, args)
        err = np.max(np.abs(got - want) / np.maximum(want, 1e-12))
        assert err < 1e-9, (name, got, want)
        tensors["sched.%s.lr" % name] = got.astype(np.float32)
        tensors["sched.%s.args" % name] = np.array(args, dtype=np.float32)
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "optim.safetensors")
    fixture.write(path, tensors, meta={
        "generator": "refs/optim_ref.py", "torch": torch.__version__,
        "numpy": np.__version__, "base_lr": BASE_LR, "steps": STEPS, "epochs": EPOCHS,
        "configs": ",".join(CONFIGS), "schedules": ",".join(SCHEDULES)})
    print("wrote %s (%d tensors, %d bytes)" % (path, len(tensors), os.path.getsize(path)))


if __name__ == "__main__":
    main()
