"""Time per training step of each architecture family on a CPU, plain against channels-last memory.

    .venv/bin/python benchmarks/memory_format.py [--repeats 5] [--steps 10] [--size 64] [--batch 8]

Builds every preset named (default: the flagship's four U-Net arms and the other families at the
flagship's widths) with `study.models.build_network`, and times Adam steps of a Dice-like loss on
random 2D batches with one torch thread (a trial's `resources.cpu: 1`), in the plain layout and in
`torch.channels_last`, alternating the two so the machine's drift falls on both. Prints the median
ms per step of each and their ratio; `Family.channels_last` (study/models/registry.py) is set for
the families where the ratio is clearly below 1. Appends a record to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import record  # noqa: E402
from study.models import build_network, resolve_architecture  # noqa: E402

WIDTHS = {"unet": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2]}, "unetpp": {"channels": [16, 32, 64, 128, 256]}}
ARMS = ["unet", "noskip_unet", "attention_unet", "nested_unet", "unetpp", "dynunet", "segresnet", "swinunetr"]


def step_ms(name: str, layout: torch.memory_format, *, steps: int, size: int, batch: int) -> float:
    torch.manual_seed(0)
    cfg = resolve_architecture(name, family_overrides=WIDTHS)
    net = build_network(cfg, spatial_dims=2, in_channels=1, out_channels=1, img_size=[size, size])
    net = net.to(memory_format=layout)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()

    def step() -> None:
        optimizer.zero_grad()
        p = torch.sigmoid(net(x))
        (1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)).backward()
        optimizer.step()

    step()  # the first step allocates and picks kernels
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--arms", nargs="+", default=ARMS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for name in args.arms:
        plain, laid = [], []
        for repeat in range(args.repeats):
            order = ((torch.contiguous_format, plain), (torch.channels_last, laid))
            for layout, out in order if repeat % 2 == 0 else order[::-1]:
                out.append(step_ms(name, layout, steps=args.steps, size=args.size, batch=args.batch))
        rows[name] = {"plain_ms": round(statistics.median(plain), 1), "channels_last_ms": round(statistics.median(laid), 1),
                      "ratio": round(statistics.median(b / a for a, b in zip(plain, laid)), 3)}
        print(name, rows[name], flush=True)
    record(ROOT / "benchmarks" / "results.jsonl", {"benchmark": "memory_format", "command": "python " + " ".join(sys.argv),
                                                   "size": args.size, "batch": args.batch, "per_arm": rows})


if __name__ == "__main__":
    main()
