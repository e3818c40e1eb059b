"""Projections P of the per-example gradients of a model's trainable ``nn.Linear`` weights
and biases, g = Pᵀ ∇θ f(x; θ0) (Grad-TAG, Sec. 3.1), applied to the layer calls (inputs a,
output gradients δ) that :func:`grouping.affinity.hook_gradients.projected_output_gradients`
records.

Projections (``make_projector``):

``dense``
    P has a Gaussian block per parameter, N(0, 1/d) entries, as ``projection.dense_projection``
    builds it; g = Σ_params P_paramᵀ vec(∂f/∂param). Per-example weight gradients are formed
    from (a, δ) a slab of output units at a time and multiplied block by block. Blocks are
    cached up to a memory budget and drawn again on every call beyond it, so the full D×d
    matrix is never held when D is large. A parameter too large for one block is cut into
    blocks of whole output units (rows of W) seeded by (seed, name, block index): a different
    draw from the same distribution than the single block of ``dense_projection``, with which
    the result agrees exactly otherwise.
``kronecker``
    P = P_out ⊗ P_in per layer (as in LoGra, Choe et al., "What is Your Data Worth to GPT?",
    2024), P_out [out, d_out] and P_in [in, d_in] Gaussian with N(0, 1/d_out), N(0, 1/d_in)
    entries: vec(δ aᵀ) projects to (P_outᵀ δ) ⊗ (P_inᵀ a), so δ aᵀ is never formed. A trainable
    bias is folded in as one more input coordinate equal to 1 ([W | b] has the gradient
    δ [a; 1]ᵀ), which keeps the same d_out·d_in features. All layers share the d = d_out·d_in
    feature space and add into it; with independent factors per layer E[PPᵀ] = I, so inner
    products are preserved in expectation as with the dense P.
``kronecker+dense``
    The Kronecker projection to an intermediate dimension k (a few thousand, 2048 by default),
    then one dense Gaussian [k, d] projection: far cheaper than the dense P, and closer to it
    in inner-product fidelity than a Kronecker projection straight to d. Its cost grows with
    k·d (the dense step), its fidelity with k.

Every random matrix is drawn on the CPU from a generator seeded by (seed, name), so every
worker rebuilds the same projection whatever its device.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from grouping.affinity.hook_gradients import LinearCall, LinearLayer, linear_layers
from grouping.affinity.projection import projection_block

PROJECTIONS = ("dense", "kronecker", "kronecker+dense")


def kronecker_factors(dim: int) -> tuple[int, int]:
    """(d_out, d_in) with d_out ≤ d_in ≤ 2·d_out and the largest product at most ``dim``, the
    most nearly square on ties: 200 → (10, 20), 196 → (14, 14), 4096 → (64, 64)."""
    best = (1, 1)
    for small in range(1, math.isqrt(dim) + 1):
        large = min(dim // small, 2 * small)
        if small * large > best[0] * best[1]:
            best = (small, large)
    return best


class _Placed:
    """CPU tensors with copies on the device and in the dtype they were last used with."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.cpu = tensors
        self.placed = tensors
        self.where = (torch.device("cpu"), torch.float32)

    def get(self, key: str, like: torch.Tensor) -> torch.Tensor:
        where = (like.device, like.dtype)
        if where != self.where:
            self.placed = {name: tensor.to(*where) for name, tensor in self.cpu.items()}
            self.where = where
        return self.placed[key]


class Projector(ABC):
    """Turns the linear-layer calls of a batch into projected per-example gradients."""

    name: str
    dim: int

    def __init__(self, layers: dict[str, LinearLayer]) -> None:
        self.layers = layers

    @abstractmethod
    def project(self, calls: list[LinearCall], features: torch.Tensor) -> torch.Tensor:
        """Add each call's projected share of the per-example gradients to ``features``
        [B, dim] (zeros, in the device and dtype to compute in) and return it."""


@dataclass(frozen=True)
class _Block:
    """Output units [start, stop) of a parameter seen as [out, width], seeded by ``key``: rows
    start·width to stop·width of the parameter's projection block."""

    key: str
    start: int
    stop: int
    width: int

    @property
    def rows(self) -> int:
        return (self.stop - self.start) * self.width


class DenseProjector(Projector):
    """Gaussian P with one block per parameter (entries N(0, 1/d)), cut by output units into
    blocks of at most ``block_bytes``; blocks are kept while their total stays within
    ``cache_bytes`` and drawn again on each call beyond it. Per-example gradients are formed a
    slab of output units at a time, at most ``slab_bytes``, in one reused buffer."""

    name = "dense"

    def __init__(self, layers: dict[str, LinearLayer], dim: int, seed: int,
                 cache_bytes: int = 2 ** 30, block_bytes: int = 2 ** 28,
                 slab_bytes: int = 2 ** 22) -> None:
        super().__init__(layers)
        self.dim, self.seed, self.slab_bytes = dim, seed, slab_bytes
        self.blocks = {param: _unit_blocks(param, out, width, dim, block_bytes)
                       for param, (out, width) in _parameter_shapes(layers).items()}
        cached: dict[str, torch.Tensor] = {}
        budget = cache_bytes // (4 * dim)
        for block in (block for blocks in self.blocks.values() for block in blocks):
            if block.rows <= budget:
                cached[block.key] = self._draw(block)
                budget -= block.rows
        self.cache = _Placed(cached)

    def _draw(self, block: _Block) -> torch.Tensor:
        return projection_block(block.key, block.rows, self.dim, self.seed)

    def _matrix(self, block: _Block, like: torch.Tensor) -> torch.Tensor:
        if block.key in self.cache.cpu:
            return self.cache.get(block.key, like)
        return self._draw(block).to(like.device, like.dtype)

    def _add(self, param: str, deltas: torch.Tensor, inputs: torch.Tensor,
             features: torch.Tensor) -> None:
        """features += vec(Σ_t δ_t a_tᵀ)ᵀ P_param, the gradient rows of a slab of output units
        formed at once (row-major as ``param.flatten()``, a bias with a_t = 1)."""
        size, width = len(features), inputs.shape[-1]
        units = max(1, self.slab_bytes // (features.element_size() * size * width))
        buffer = features.new_empty(size * min(units, deltas.shape[-1]) * width)
        for block in self.blocks[param]:
            matrix = self._matrix(block, features)
            for low in range(block.start, block.stop, units):
                high = min(low + units, block.stop)
                slab = buffer[:size * (high - low) * width].view(size, high - low, width)
                torch.bmm(deltas[:, :, low:high].transpose(1, 2), inputs, out=slab)
                rows = slice((low - block.start) * width, (high - block.start) * width)
                features.addmm_(slab.view(size, -1), matrix[rows])

    def project(self, calls: list[LinearCall], features: torch.Tensor) -> torch.Tensor:
        """g += Σ_params P_paramᵀ vec(∂f/∂param)."""
        for call in calls:
            layer = self.layers[call.layer]
            deltas = call.deltas.to(features.dtype)
            if layer.weight:
                self._add(f"{call.layer}.weight", deltas, call.inputs.to(features.dtype),
                          features)
            if layer.bias:
                self._add(f"{call.layer}.bias", deltas, deltas.new_ones(*deltas.shape[:2], 1),
                          features)
        return features


def _parameter_shapes(layers: dict[str, LinearLayer]) -> dict[str, tuple[int, int]]:
    """Each trainable parameter as [out, width]: width = in for a weight, 1 for a bias."""
    shapes = {}
    for name, layer in layers.items():
        if layer.weight:
            shapes[f"{name}.weight"] = (layer.out_features, layer.in_features)
        if layer.bias:
            shapes[f"{name}.bias"] = (layer.out_features, 1)
    return shapes


def _unit_blocks(param: str, out: int, width: int, dim: int, block_bytes: int) -> list[_Block]:
    """One block seeded by the parameter's name when it fits in ``block_bytes``, else blocks of
    whole output units seeded by ``param#i``."""
    units = max(1, block_bytes // (4 * dim * width))
    if out <= units:
        return [_Block(param, 0, out, width)]
    return [_Block(f"{param}#{index}", start, min(start + units, out), width)
            for index, start in enumerate(range(0, out, units))]


class KroneckerProjector(Projector):
    """P = P_out ⊗ P_in per layer, into d = d_out·d_in features shared by all layers."""

    name = "kronecker"

    def __init__(self, layers: dict[str, LinearLayer], dim: int, seed: int) -> None:
        super().__init__(layers)
        self.factors = kronecker_factors(dim)
        self.dim = self.factors[0] * self.factors[1]
        out_dim, in_dim = self.factors
        tensors = {}
        for name, layer in layers.items():
            inputs = layer.in_features * int(layer.weight) + int(layer.bias)
            tensors[f"{name}:out"] = projection_block(f"{name}:out", layer.out_features,
                                                      out_dim, seed)
            tensors[f"{name}:in"] = projection_block(f"{name}:in", inputs, in_dim, seed)
        self.matrices = _Placed(tensors)

    def factor_matrices(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_out [out, d_out], P_in [in', d_in]) of a layer, in' = in (if W trains) + 1 (if b
        trains), the bias row last: feature (o, i) at o·d_in + i is vec(∂f/∂[W | b]) projected
        by column (o, i) of P_out ⊗ P_in."""
        return self.matrices.cpu[f"{layer}:out"], self.matrices.cpu[f"{layer}:in"]

    def _input_side(self, call: LinearCall, like: torch.Tensor) -> torch.Tensor:
        """P_inᵀ [a_t; 1] for every position: [B, T, d_in]."""
        layer = self.layers[call.layer]
        p_in = self.matrices.get(f"{call.layer}:in", like)
        if not layer.weight:
            return p_in[0].expand(*call.inputs.shape[:2], -1)
        projected = call.inputs.to(like.dtype) @ p_in[:layer.in_features]
        return projected + p_in[-1] if layer.bias else projected

    def features(self, calls: list[LinearCall], like: torch.Tensor) -> torch.Tensor:
        """Σ_calls Σ_t (P_outᵀ δ_t) ⊗ (P_inᵀ [a_t; 1]) [B, d_out·d_in] in the device and dtype of
        ``like``: one batched [d_out, n]·[n, d_in] product per example over the n positions of
        all calls stacked."""
        out_side = torch.cat([call.deltas.to(like.dtype)
                              @ self.matrices.get(f"{call.layer}:out", like) for call in calls], 1)
        in_side = torch.cat([self._input_side(call, like) for call in calls], 1)
        return torch.bmm(out_side.transpose(1, 2), in_side).flatten(1)

    def project(self, calls: list[LinearCall], features: torch.Tensor) -> torch.Tensor:
        """g += the Kronecker features of the calls."""
        return features.add_(self.features(calls, features)) if calls else features


class KroneckerDenseProjector(Projector):
    """The Kronecker projection to ``intermediate_dim`` features, then a dense Gaussian
    [k, d] projection (entries N(0, 1/d)) seeded by (seed, "kronecker+dense")."""

    name = "kronecker+dense"

    def __init__(self, layers: dict[str, LinearLayer], dim: int, seed: int,
                 intermediate_dim: int) -> None:
        super().__init__(layers)
        self.dim = dim
        self.kronecker = KroneckerProjector(layers, intermediate_dim, seed)
        self.dense = _Placed({self.name: projection_block(self.name, self.kronecker.dim, dim,
                                                          seed)})

    def project(self, calls: list[LinearCall], features: torch.Tensor) -> torch.Tensor:
        """g += P_denseᵀ (the intermediate Kronecker features)."""
        if not calls:
            return features
        return features.addmm_(self.kronecker.features(calls, features),
                               self.dense.get(self.name, features))


def make_projector(kind: str, model: nn.Module, dim: int, seed: int,
                   intermediate_dim: int = 2048, cache_bytes: int = 2 ** 30) -> Projector:
    """The projection ``kind`` (one of PROJECTIONS) of the trainable ``nn.Linear`` weights and
    biases of ``model`` into ``dim`` features (``kronecker``: d_out·d_in ≤ dim, see
    ``kronecker_factors``; the projector's ``dim`` is the actual size)."""
    layers = linear_layers(model)
    if kind == "dense":
        return DenseProjector(layers, dim, seed, cache_bytes=cache_bytes)
    if kind == "kronecker":
        return KroneckerProjector(layers, dim, seed)
    if kind == "kronecker+dense":
        return KroneckerDenseProjector(layers, dim, seed, intermediate_dim)
    raise ValueError(f"unknown projection {kind!r}; expected one of {PROJECTIONS}")
