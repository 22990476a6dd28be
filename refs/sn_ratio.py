"""Operator norm of the F64C5 feedback conv (64->64, 5x5, pad 2, on 14x14 maps) whose
kernel, drawn as the authors' init (U(-1,1), each output filter unit-norm), is scaled so the
reshaped (64, 64*25) matrix has norm 1 (docs/ide.md, --ide-sn-kernel).
Run: /usr/bin/python3 refs/sn_ratio.py"""
import torch

torch.manual_seed(0)
w = torch.rand(64, 64, 5, 5) * 2 - 1
w = w / w.reshape(64, -1).norm(dim=1)[:, None, None, None]
w = w / torch.linalg.svdvals(w.reshape(64, -1))[0]
x = torch.randn(1, 64, 14, 14)
for _ in range(200):   # power iteration on W^T W
    x = torch.nn.functional.conv_transpose2d(torch.nn.functional.conv2d(x, w, padding=2), w, padding=2)
    x = x / x.norm()
print("operator norm at reshaped-kernel norm 1: %.3f" % torch.nn.functional.conv2d(x, w, padding=2).norm())
