"""Seeded random projections of parameter space that every worker rebuilds identically."""

from __future__ import annotations

import zlib

import torch


def projection_block(name: str, numel: int, dim: int, seed: int) -> torch.Tensor:
    """The [numel, dim] block of the Gaussian projection P (entries N(0, 1/dim)) for one
    named parameter. Seeded by (seed, name) alone, so each block is the same on every worker
    and independent of the other parameters (Johnson-Lindenstrauss: E[PPᵀ] = I)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return torch.randn(numel, dim, generator=generator) / dim ** 0.5


def dense_projection(shapes: dict[str, torch.Size], dim: int, seed: int) -> dict[str, torch.Tensor]:
    """One projection block per named parameter."""
    return {name: projection_block(name, shape.numel(), dim, seed)
            for name, shape in shapes.items()}
