"""Writes the TorchScript fixtures of test/hardening.test.ts into the folder given as the only argument:

  unsupported outputs (each forward(x) returns one tensor this package refuses): sparse.pt (COO layout),
  nested.pt (a nested tensor), mkldnn.pt (MKL-DNN layout), complex.pt (complex64), quantized.pt (quint8),
  int8.pt (int8); sparse_grad.pt: an embedding with sparse gradients (forward(indices) sums its rows);
  proto_dict.pt: forward(x) returns {"__proto__": x, "a": x * 2};
  inplace_mul.pt: forward(x) multiplies x by 2 in place and returns it;
  gradient.json: PyTorch's bootstrapped cross-entropy (p = 0.5, mean over the 16 hardest of 32 pixels) and its
  gradient for the fixed logits and targets that the test builds the same way.

Run by the test with the Python whose torch matches the addon's LibTorch.
"""
import json
import os
import sys
from typing import Dict

import torch
import torch.nn.functional as F


class Sparse(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to_sparse()


class Nested(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._nested_tensor_from_tensor_list([x, x[:1]])


class Mkldnn(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to_mkldnn()


class Complex(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.complex(x, x)


class Quantized(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.quantize_per_tensor(x, 0.1, 0, torch.quint8)


class Int8(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.int8)


class SparseGrad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(4, 2, sparse=True)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices).sum()


class ProtoDict(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"__proto__": x, "a": x * 2}


class InplaceMul(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(2)


def main() -> None:
    out = sys.argv[1]
    modules = {
        "sparse": Sparse,
        "nested": Nested,
        "mkldnn": Mkldnn,
        "complex": Complex,
        "quantized": Quantized,
        "int8": Int8,
        "sparse_grad": SparseGrad,
        "proto_dict": ProtoDict,
        "inplace_mul": InplaceMul,
    }
    for name, cls in modules.items():
        torch.jit.script(cls()).save(os.path.join(out, name + ".pt"))

    # Logits (2, 3, 4, 4) and targets (2, 4, 4) from integer formulas, exact in float32 on both sides; the 32
    # per-pixel losses are at least 0.017 apart, so that the top 16 are the same whichever way ties would be settled.
    count = 2 * 3 * 4 * 4
    logits = torch.tensor([((i * i * 17 + 3 * i) % 97) / 16 - 3 for i in range(count)], dtype=torch.float32)
    logits = logits.reshape(2, 3, 4, 4).requires_grad_(True)
    target = torch.tensor([(i * 7) % 3 for i in range(2 * 4 * 4)], dtype=torch.int64).reshape(2, 4, 4)
    losses = F.cross_entropy(logits, target, reduction="none").flatten()
    loss = losses.topk(16).values.mean()
    loss.backward()
    with open(os.path.join(out, "gradient.json"), "w") as f:
        json.dump({"loss": loss.item(), "grad": logits.grad.flatten().tolist()}, f)


if __name__ == "__main__":
    main()
