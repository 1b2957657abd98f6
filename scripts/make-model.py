#!/usr/bin/env python3
"""Writes models/segnet.pt: the small TorchScript segmentation network of `npm run demo`.

    /usr/bin/python3 scripts/make-model.py [--out models/segnet.pt] [--classes 5] [--seed 0]

Four 3x3 convolutions, 3 -> 16 -> 32 -> 16 -> C, with dilations 1, 2, 4, 1 so that a pixel sees a 17x17
neighbourhood (enough to tell a thin line from the edge of a blob); padding keeps the input's H x W, so the
output is N x C x H x W logits. About 10k parameters (~50 KB). The initial weights are PyTorch's default
initialisation under torch.manual_seed(seed), so the file is reproducible; it is committed, so that the demo
needs no Python.
"""
import argparse
import os

import torch
from torch import nn


class SegNet(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=2, dilation=2)
        self.conv3 = nn.Conv2d(32, 16, 3, padding=4, dilation=4)
        self.head = nn.Conv2d(16, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.head(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "models", "segnet.pt"))
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = torch.jit.script(SegNet(args.classes))
    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    model.save(out)
    with torch.no_grad():
        shape = tuple(model(torch.zeros(1, 3, 64, 64)).shape)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {params} parameters, {os.path.getsize(out)} bytes, output {shape} for a 1x3x64x64 input")


if __name__ == "__main__":
    main()
