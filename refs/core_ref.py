"""Golden values for soma's core (BP on a tiny MLP and a tiny CNN).

Independent reference: PyTorch autograd and torch.optim.  For each model it
records the initial state_dict, a fixed batch, the logits, the loss, every
parameter gradient, and the parameters (plus batchnorm running statistics)
after three training steps with SGD-momentum and, separately, with Adam.
The nn.Sequential layer order equals soma's, so state_dict names match the
names soma gives its tensors.

Run with Debian's interpreter:  /usr/bin/python3 refs/core_ref.py tests/fixtures
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402

torch.set_default_dtype(torch.float32)


def mlp():
    # soma spec "20-16-bn-12-5", relu
    return nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5))


def mlp_plain():
    # soma spec "20-16-12-5", relu.  Adam is checked on this one: with a bias
    # feeding batchnorm, that bias's true gradient is 0 and Adam would turn
    # float round-off (1e-9) into full-size steps of arbitrary sign.
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                         nn.Linear(12, 5))


def cnn():
    # soma spec "conv3x4p1-bn-pool2-conv3x6s2p1-avgpool2-fc7-fc5", input 2x9x9, relu
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6, 7), nn.ReLU(),
                         nn.Linear(7, 5))


def record(name, make, x, y, outdir, spec, shape, optims=("sgd", "adam")):
    out = {"x": x.numpy(), "y": y.numpy().astype(np.int32)}
    torch.manual_seed(1)
    m0 = make()
    init = {k: v.detach().clone() for k, v in m0.state_dict().items()
            if not k.endswith("num_batches_tracked")}
    for k, v in init.items():
        out["init." + k] = v.numpy()
    # forward / backward at the initial weights (training mode: batch statistics)
    m = make()
    m.load_state_dict(m0.state_dict())
    m.train()
    logits = m(x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    out["logits"] = logits.detach().numpy()
    out["loss"] = np.array([loss.item()], dtype=np.float32)
    for k, p in m.named_parameters():
        out["grad." + k] = p.grad.numpy()
    # three steps with each optimizer; eval-mode logits afterwards
    makers = {"sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
              "adam": lambda ps: torch.optim.Adam(ps, lr=0.01)}
    for oname in optims:
        mk = makers[oname]
        m = make()
        m.load_state_dict(m0.state_dict())
        m.train()
        opt = mk(m.parameters())
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        out[oname + ".losses"] = np.array(losses, dtype=np.float32)
        for k, v in m.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                out[oname + ".after." + k] = v.numpy()
        m.eval()
        with torch.no_grad():
            out[oname + ".eval_logits"] = m(x).numpy()
    fixture.write(os.path.join(outdir, name + ".safetensors"), out,
                  {"spec": spec, "input": shape, "torch": torch.__version__,
                   "optims": ",".join(optims)})


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 20, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    record("bp_mlp", mlp, x, y, outdir, "20-16-bn-12-5", "20,1,1", ("sgd",))
    record("bp_mlp_plain", mlp_plain, x, y, outdir, "20-16-12-5", "20,1,1")
    x = torch.randn(6, 2, 9, 9, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    record("bp_cnn", cnn, x, y, outdir, "conv3x4p1-bn-pool2-conv3x6s2p1-avgpool2-fc7-fc5", "2,9,9",
           ("sgd",))
    print("wrote", outdir)


if __name__ == "__main__":
    main()
