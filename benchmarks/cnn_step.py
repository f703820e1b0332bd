"""Seconds per epoch of 55k images for CNN training steps in four builds of the same net, in one process, so
that the ratios are read on one machine state: two block orders, each in two memory orders.

- norm first: conv -> batch norm -> ReLU -> max-pool, the block order of the template's CNN before it pooled
  first; pool first: conv -> max-pool -> batch norm -> ReLU (project.models.CNN): the norm and the ReLU see a
  quarter of the values;
- NCHW, PyTorch's default memory order, or channels-last (NHWC, `--model.channels_last true`, on in the
  default recipe).

    python benchmarks/cnn_step.py [--repeats 2] [--steps 40]

Plain PyTorch steps (forward, cross-entropy, backward, fused AdamW) on random images: the layers' cost, no data
loading or validation. Prints one line per net and batch size.
"""

import argparse
import time

import torch
from torch import nn
from torch.nn import functional as F

from project.models import CNN

NETS = {"CNN 32-64, fc 128": {}, "CNN 32-64-128, fc 128": {"channels": [32, 64, 128]}}


def norm_first(net: CNN) -> CNN:
    """The same layers in the previous block order: conv, batch norm, ReLU, then max-pool."""
    layers = list(net.features)
    blocks = [layers[i : i + 4] for i in range(0, len(layers), 4)]  # conv, pool, norm, ReLU
    net.features = nn.Sequential(*[layer for conv, pool, norm, relu in blocks for layer in (conv, norm, relu, pool)])
    return net


def seconds_per_epoch(net: nn.Module, batch_size: int, channels_last: bool, steps: int) -> float:
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
                times = {
                    (order, memory): seconds_per_epoch(build(CNN(**options)), batch_size, memory == "NHWC", args.steps)
                    for order, build in (("norm first", norm_first), ("pool first", lambda net: net))
                    for memory in ("NCHW", "NHWC")
                }
                cells = ", ".join(f"{order} {memory} {seconds:.1f}" for (order, memory), seconds in times.items())
                pool = times["norm first", "NHWC"] / times["pool first", "NHWC"]
                both = times["norm first", "NCHW"] / times["pool first", "NHWC"]
                print(
                    f"{name}, batch {batch_size}: s/epoch {cells}; pool first, channels-last: {pool:.2f}x; "
                    f"both against neither: {both:.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
