"""Golden values for soma's LFP rule (layer-wise feedback propagation).

Independent reference, written from the equations of Weber et al. 2023
(eqs. 7-13) and ../shared/notes/lfp.md (sec. 3-6), not from soma's C code
and not from the authors' code.  Every layer is decomposed explicitly into
its connection contributions z_ij = w_ij a_i (dense: an outer product per
sample; conv: the unfolded patches times the filters; average pooling:
the window members times 1/k^2), in float64, and the LRP rule is applied to
those tensors directly:

  epsilon / zero  r_ij = z_ij R_j / stab(z_j)           stab(z) = z + eps sgn0(z)
  alphabeta       r_ij = alpha z_ij sgn0(z_j) R_j / stab(z+_j)   if z_ij >= 0
                         -beta z_ij sgn0(z_j) R_j / (z-_j - eps)  otherwise
  zplusminus      r_ij = |z_ij| sgn0(z_j) R_j / (z+_j - z-_j + eps)
  R_i = sum_j r_ij;  fb_ij = r_ij with z_ij replaced by |w_ij| a_i (eqs. 9, 11, 13)
  (the bias is a connection from a constant input 1), fb summed over the batch.
Max pooling routes R to the window's winner; ReLU and flatten pass R on.

For each case (rule composite, eps, alpha/beta, feedback function,
between-layer normalisation) the fixture holds fb for every parameter and
the relevance at the input.

Run with Debian's interpreter:  /usr/bin/python3 refs/lfp_ref.py tests/fixtures
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402

torch.set_default_dtype(torch.float32)


def sgn0(z):
    return torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def sdiv(x, d):
    """x / d with 0 where d == 0."""
    safe = torch.where(d == 0, torch.ones_like(d), d)
    return torch.where(d == 0, torch.zeros_like(x), x / safe)


def split(zij, zb, R, z, rule, eps, alpha, beta):
    """Connection shares.  zij: (..., O, K, P) contributions, zb: bias (O) or
    None, R and z: (..., O, P).  Returns sel (..., O, K, P): the per-connection
    factor such that r_ij = zij * sel (abs(zij) * sel for zplusminus), and the
    bias factor selb (..., O, P)."""
    if rule in ("zero", "epsilon"):
        e = 0.0 if rule == "zero" else eps
        s = sdiv(R, z + e * sgn0(z))
        return s.unsqueeze(-2).expand_as(zij), s, s
    pos = zij >= 0
    zp = (zij * pos).sum(-2)
    zn = (zij * ~pos).sum(-2)
    if zb is not None:
        zp = zp + zb.clamp(min=0)[:, None]
        zn = zn + zb.clamp(max=0)[:, None]
    r = sgn0(z) * R
    if rule == "alphabeta":
        sp = sdiv(alpha * r, zp + eps)
        sn = sdiv(-beta * r, zn - eps)
        sel = torch.where(pos, sp.unsqueeze(-2), sn.unsqueeze(-2))
        return sel, sp, sn
    if rule == "zplusminus":
        s = sdiv(r, zp - zn + eps)
        return s.unsqueeze(-2).expand_as(zij), s, s
    raise ValueError(rule)


def linear_relevance(a_col, W, b, R, z, rule, eps, alpha, beta):
    """a_col: (B, K, P) inputs seen by each output position, W: (O, K),
    b: (O) or None, R, z: (B, O, P).  Returns R_col (B, K, P), fbW (O, K), fbb (O)."""
    zij = W[None, :, :, None] * a_col[:, None, :, :]          # (B, O, K, P)
    zb = b
    sel, sp, sn = split(zij, zb, R, z, rule, eps, alpha, beta)
    if rule == "zplusminus":
        R_col = (zij.abs() * sel).sum(1)
    else:
        R_col = (zij * sel).sum(1)
    # fb: z_ij -> |w_ij| a_i in the connection share
    fbW = (W.abs()[None, :, :, None] * a_col[:, None, :, :] * sel).sum((0, 3))
    fbb = None
    if b is not None:
        if rule == "alphabeta":
            sb = torch.where(b[None, :, None] >= 0, sp, sn)
        else:
            sb = sp
        fbb = b.abs() * sb.sum((0, 2))
    return R_col, fbW, fbb


def reward(o, y, kind):
    C = o.shape[1]
    onehot = F.one_hot(y.long(), C).to(o.dtype)
    if kind == "softmax":
        return o * (onehot - torch.softmax(o, 1))
    if kind == "sigmoid":
        return o * (onehot - torch.sigmoid(o))
    if kind == "pm1":
        right = (o.argmax(1) == y.long()).to(o.dtype) * 2 - 1
        return onehot * right[:, None]
    raise ValueError(kind)


def lfp(model, x, y, case):
    """Returns {param name: fb}, R at the input."""
    rules = dict(kv.split("=") for kv in case["rules"].split(","))
    eps, alpha, beta = case["eps"], case["alpha"], case["beta"]
    mods = list(model)
    acts = [x]
    with torch.no_grad():
        for m in mods:
            acts.append(m(acts[-1]))
    R = reward(acts[-1], y, case["reward"])
    fb = {}
    for i in reversed(range(len(mods))):
        m, a, out = mods[i], acts[i], acts[i + 1]
        if case["norm"] and isinstance(m, (nn.Linear, nn.Conv2d)):
            mx = R.abs().max()
            if mx > 0:
                R = R / mx
        if isinstance(m, nn.Linear):
            Rc, fw, fbias = linear_relevance(a[:, :, None], m.weight, m.bias, R[:, :, None],
                                             out[:, :, None], rules["dense"], eps, alpha, beta)
            R = Rc[:, :, 0]
            fb["%d.weight" % i], fb["%d.bias" % i] = fw, fbias
        elif isinstance(m, nn.Conv2d):
            k, st, pd = m.kernel_size, m.stride, m.padding
            col = F.unfold(a, k, padding=pd, stride=st)      # (B, C*kh*kw, P)
            O = m.out_channels
            Rr = R.reshape(R.shape[0], O, -1)
            zz = out.reshape(out.shape[0], O, -1)
            Rc, fw, fbias = linear_relevance(col, m.weight.reshape(O, -1), m.bias, Rr, zz,
                                             rules["conv"], eps, alpha, beta)
            R = F.fold(Rc, a.shape[2:], k, padding=pd, stride=st)
            fb["%d.weight" % i], fb["%d.bias" % i] = fw.reshape(m.weight.shape), fbias
        elif isinstance(m, nn.AvgPool2d):
            k = m.kernel_size
            B, C, H, W = a.shape
            col = F.unfold(a, k, stride=k).reshape(B, C, k * k, -1)   # (B, C, k*k, P)
            zij = col / (k * k)
            Rr = R.reshape(B, C, -1)
            zz = out.reshape(B, C, -1)
            sel, _, _ = split(zij, None, Rr, zz, rules["pool"], eps, alpha, beta)
            Rc = (zij.abs() if rules["pool"] == "zplusminus" else zij) * sel
            R = F.fold(Rc.reshape(B, C * k * k, -1), (H, W), k, stride=k)
        elif isinstance(m, nn.MaxPool2d):
            _, idx = F.max_pool2d(a, m.kernel_size, return_indices=True)
            R = F.max_unpool2d(R, idx, m.kernel_size, output_size=a.shape[2:])
        elif isinstance(m, nn.Flatten):
            R = R.reshape(a.shape)
        # ReLU: R passes unchanged
    return fb, R


def net_a():
    # soma spec "conv3x4p1-pool2-conv3x5-avgpool2-fc6-fc5", input 2x8x8, relu
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 5))


def net_b():
    # soma spec "avgpool2-conv3x4p1-pool2-fc6-fc5", input 2x8x8: average
    # pooling of the raw (signed) input
    return nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 6), nn.ReLU(),
                         nn.Linear(6, 5))


CASES = [
    # name, rules, eps, alpha, beta, reward, norm
    ("zero", "dense=zero,conv=zero,pool=zero", 0.0, 2.0, 1.0, "softmax", 0),
    ("eps", "dense=epsilon,conv=epsilon,pool=epsilon", 1e-6, 2.0, 1.0, "softmax", 0),
    ("eps_big", "dense=epsilon,conv=epsilon,pool=epsilon", 0.25, 2.0, 1.0, "softmax", 0),
    ("a2b1", "dense=alphabeta,conv=alphabeta,pool=alphabeta", 1e-6, 2.0, 1.0, "softmax", 0),
    ("a1b0", "dense=alphabeta,conv=alphabeta,pool=alphabeta", 1e-6, 1.0, 0.0, "softmax", 0),
    ("zpzm", "dense=zplusminus,conv=zplusminus,pool=zplusminus", 1e-6, 2.0, 1.0, "softmax", 0),
    ("mixed", "dense=epsilon,conv=zplusminus,pool=alphabeta", 1e-6, 2.0, 1.0, "softmax", 0),
    ("sigmoid", "dense=epsilon,conv=epsilon,pool=epsilon", 1e-6, 2.0, 1.0, "sigmoid", 0),
    ("pm1_norm", "dense=epsilon,conv=epsilon,pool=epsilon", 1e-6, 2.0, 1.0, "pm1", 1),
    ("a2b1_norm", "dense=alphabeta,conv=zplusminus,pool=epsilon", 0.01, 2.0, 1.0, "sigmoid", 1),
]


def record(name, make, spec, shape, x, y, outdir):
    torch.manual_seed(1)
    m32 = make()
    out = {"x": x.numpy(), "y": y.numpy().astype(np.int32)}
    for k, v in m32.state_dict().items():
        out["init." + k] = v.numpy()
    m = make().double()
    m.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    meta = {"spec": spec, "input": shape, "torch": torch.__version__,
            "cases": ",".join(c[0] for c in CASES)}
    for cname, rules, eps, alpha, beta, rew, norm in CASES:
        case = {"rules": rules, "eps": eps, "alpha": alpha, "beta": beta, "reward": rew,
                "norm": norm}
        with torch.no_grad():
            fb, R = lfp(m, x.double(), y, case)
        if cname == "zero":
            # the reference checks itself against the oracle of notes sec. 3.3:
            # LFP-0 with the softmax reward on a ReLU net = |theta| (-dCE_sum/dtheta)
            m.zero_grad()
            nn.functional.cross_entropy(m(x.double()), y, reduction="sum").backward()
            for k, p in m.named_parameters():
                want = -p.detach().abs() * p.grad
                assert torch.allclose(fb[k], want, rtol=1e-9, atol=1e-12), (name, k)
        for k, v in fb.items():
            out[cname + ".fb." + k] = v.numpy()
        out[cname + ".R_in"] = R.numpy()
        meta["case." + cname] = "%s %r %r %r %s %d" % (rules, eps, alpha, beta, rew, norm)
    fixture.write(os.path.join(outdir, name + ".safetensors"), out, meta)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 2, 8, 8, generator=g)
    y = torch.randint(0, 5, (4,), generator=g)
    record("lfp_a", net_a, "conv3x4p1-pool2-conv3x5-avgpool2-fc6-fc5", "2,8,8", x, y, outdir)
    record("lfp_b", net_b, "avgpool2-conv3x4p1-pool2-fc6-fc5", "2,8,8", x, y, outdir)
    print("wrote", outdir)


if __name__ == "__main__":
    main()
