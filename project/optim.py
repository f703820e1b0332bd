"""What the optimizer and the schedule are given: parameter groups by name prefix, and warm-up + cosine."""

import inspect
import math
from typing import Any, Literal

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


def parameter_groups(net: nn.Module, param_groups: list[dict[str, Any]] | None = None,
                     exempt_bias_and_norm: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Optimizer parameter groups: one per `{"prefix": "features", "lr": 0.01, ...}`, then the rest.

    A parameter goes to the first group whose prefix starts its name (as in `net.named_parameters()`); the
    rest keep the optimizer's own options. With `exempt_bias_and_norm`, biases and normalization weights
    (every parameter with fewer than two dimensions) get weight_decay 0, in every group."""
    named = list(net.named_parameters())
    taken, result = set(), []  # parameter names in a group so far, the groups
    for spec in param_groups or []:
        options = dict(spec)
        prefix = options.pop("prefix", None)
        if not prefix:
            raise ValueError(f'param_groups: each group needs a "prefix", got {spec}')
        members = [(n, p) for n, p in named if n.startswith(prefix) and n not in taken]
        if not members:
            tops = sorted({n.split(".")[0] for n, _ in named})
            raise ValueError(f"param_groups: prefix {prefix!r} matches no parameter of the net; its parameter names "
                             f"start with {', '.join(tops)} (see net.named_parameters())")  # fmt: skip
        taken.update(n for n, _ in members)
        result += _split(members, {"name": prefix, **options}, exempt_bias_and_norm)
    rest = [(n, p) for n, p in named if n not in taken]
    if rest:
        result += _split(rest, {"name": "default"}, exempt_bias_and_norm)
    if len(result) == 1:
        del result[0]["name"]  # one group: its learning rate is logged as plain lr-<Optimizer>
    return result


def _split(members, options: dict[str, Any], exempt: bool) -> list[dict[str, Any]]:
    if not exempt:
        return [{"params": [p for _, p in members], **options}]
    decay = [p for _, p in members if p.ndim >= 2]
    no_decay = [p for _, p in members if p.ndim < 2]
    groups = [{"params": decay, **options}] if decay else []
    if no_decay:
        groups.append({"params": no_decay, **options, "name": f"{options['name']}/no_decay", "weight_decay": 0.0})
    return groups


class WarmupCosine(LambdaLR):
    """Linear warm-up from 0 to the optimizer's lr over `warmup_steps`, then cosine decay to `min_factor` x lr
    at `total_steps` (filled in from the Trainer when left out). Stepped after every optimizer step."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 100, total_steps: int | None = None,
                 min_factor: float = 0.0) -> None:  # fmt: skip
        if total_steps is None:
            raise ValueError("total_steps: WarmupCosine needs the number of optimizer steps (ImageClassifier fills it)")
        self.warmup_steps, self.total_steps, self.min_factor = warmup_steps, total_steps, min_factor
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class OneCycle(OneCycleLR):
    """OneCycleLR whose peak is the optimizer's `lr` (per parameter group) instead of an argument of its own, so
    that the optimizer's lr is the rate under this schedule too. Momentum is not cycled unless asked
    (`cycle_momentum`; torch's default cycles it, which overrides SGD's `momentum` and Adam's first beta, and
    gives plain SGD a momentum): the optimizer's options are what they say. Otherwise torch's arguments."""

    def __init__(self, optimizer: Optimizer, total_steps: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: Literal["cos", "linear"] = "cos", cycle_momentum: bool = False,
                 base_momentum: float = 0.85, max_momentum: float = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False) -> None:  # fmt: skip
        if total_steps is None:
            raise ValueError("total_steps: OneCycle needs the number of optimizer steps (ImageClassifier fills it in)")
        super().__init__(
            optimizer, [group["lr"] for group in optimizer.param_groups], total_steps, None, None, pct_start,
            anneal_strategy, cycle_momentum, base_momentum, max_momentum, div_factor, final_div_factor, three_phase,
        )  # fmt: skip


def takes(scheduler, name: str) -> bool:
    """Whether the schedule has an argument `name` (the CLI passes a partial with the given ones as keywords)."""
    if name in getattr(scheduler, "keywords", {}):
        return True
    try:
        return name in inspect.signature(scheduler).parameters
    except (TypeError, ValueError):
        return False


def needs_monitor(scheduler: LRScheduler) -> str | None:
    """The metric a schedule such as ReduceLROnPlateau watches (Lightning's CLI version carries `monitor`)."""
    if hasattr(scheduler, "monitor"):
        return scheduler.monitor
    return "val/loss" if type(scheduler).__name__ == "ReduceLROnPlateau" else None
