"""Train-only augmentation on the whole batch, on its device: one random affine map per image."""

import math

import torch
from torch.nn import functional as F


def random_affine(images: torch.Tensor, rotation: float, translate: float, scale: tuple[float, float]) -> torch.Tensor:
    """Rotate by up to +-rotation degrees, shift by up to +-translate of the size, zoom by a factor in scale.

    images: normalized (N, C, H, W). Pixels moved in from outside take the image's background value (its
    minimum), so a shifted digit sits on the same black as before."""
    n, device = images.shape[0], images.device
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(rotation)
    zoom = torch.empty(n, device=device).uniform_(*scale)
    shift = (torch.rand(n, 2, device=device) * 2 - 1) * translate * 2  # grid coordinates span -1..1
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    background = images.amin(dim=(1, 2, 3), keepdim=True)
    moved = F.grid_sample(images - background, grid, padding_mode="zeros", align_corners=False)
    return moved + background


def random_flip(images: torch.Tensor) -> torch.Tensor:
    """Mirror each image left to right with probability 1/2."""
    mirrored = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
    return torch.where(mirrored, images.flip(-1), images)
