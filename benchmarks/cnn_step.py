"""Seconds per epoch of 55k images for CNN training steps, memory order as PyTorch's default (NCHW) and
channels-last (NHWC, `--model.channels_last true`), in one process, so that the ratio is read on one machine state.

    python benchmarks/channels_last.py [--repeats 2] [--steps 40]

Plain PyTorch steps (forward, cross-entropy, backward, fused AdamW) on random images: the convolutions' cost, no
data loading or validation. Prints one line per net, batch size and memory order.
"""

import argparse
import time

import torch
from torch.nn import functional as F

from project.models import CNN

NETS = {"CNN 32-64, fc 128": {}, "CNN 32-64-128, fc 256": {"channels": [32, 64, 128], "hidden": 256}}


def seconds_per_epoch(net: torch.nn.Module, batch_size: int, channels_last: bool, steps: int) -> float:
    images, labels = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    if channels_last:
        net, images = net.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), fused=True)
    for step in range(steps + 5):  # 5 warm-up steps, not timed
        if step == 5:
            start = time.perf_counter()
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps / batch_size * 55_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    for _ in range(args.repeats):
        for name, options in NETS.items():
            for batch_size in (128, 256):
                default = seconds_per_epoch(CNN(**options), batch_size, False, args.steps)
                last = seconds_per_epoch(CNN(**options), batch_size, True, args.steps)
                print(f"{name}, batch {batch_size}: NCHW {default:.1f} s/epoch, channels-last {last:.1f} s/epoch, "
                      f"{default / last:.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
