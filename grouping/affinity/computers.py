"""Gradient computers: the base model of either family, its inputs and its projection, held
together so that a worker builds them once and then turns chunks of (example, task) rows into
base outputs f0 and projected output gradients g."""

from __future__ import annotations

import numpy as np
import torch

from grouping.affinity.hook_gradients import projected_output_gradients
from grouping.affinity.projection import dense_projection
from grouping.affinity.projectors import kronecker_factors, make_projector
from grouping.families import family_of
from grouping.models import Spec, restore
from grouping.tasksets import AnyTaskSet


def feature_dim(projection: str, dim: int) -> int:
    """The number of gradient features a projection gives for ``projection_dim`` ``dim``
    (none for ``dim`` 0: base outputs only)."""
    if projection == "kronecker" and dim > 0:
        rows, columns = kronecker_factors(dim)
        return rows * columns
    return dim


class GradientComputer:
    """f0 and Pᵀ∇f for rows of the task set, at the base model θ0.

    The projection covers the trainable parameters: every parameter of a SIGN-MLP, the LoRA
    parameters of a language model. ``dense`` runs vmap of grad with per-parameter blocks;
    the Kronecker options record each linear layer's inputs and output gradients instead
    (:mod:`grouping.affinity.hook_gradients`, with the projectors of
    :mod:`grouping.affinity.projectors`).
    """

    def __init__(self, spec: Spec, state: dict[str, torch.Tensor], taskset: AnyTaskSet,
                 dim: int, seed: int, projection: str = "dense",
                 intermediate_dim: int = 2048, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = restore(spec, state).to(self.device)
        self.dim, self.projector = dim, None
        self.projection: dict[str, torch.Tensor] = {}
        if dim > 0 and projection == "dense":
            shapes = {name: param.shape for name, param in self.model.named_parameters()
                      if param.requires_grad}
            self.projection = {name: block.to(self.device)
                               for name, block in dense_projection(shapes, dim, seed).items()}
        elif dim > 0:
            self.projector = make_projector(projection, self.model, dim, seed, intermediate_dim)
        self.outputs = family_of(taskset).output_rows(self.model, spec, taskset, self.device)

    def __call__(self, examples: np.ndarray, tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f0 [rows] and the projected gradients [rows, d] of rows (examples, tasks), on the
        CPU whatever the computer's device; with ``dim`` 0, f0 by a forward pass and [rows, 0]."""
        batch = self.outputs.batch(examples, tasks)
        if self.dim == 0:
            self.model.eval()
            with torch.no_grad():
                f0 = self.outputs.output(self.model, batch)
            return f0.cpu().numpy(), np.zeros((len(f0), 0), np.float32)
        if self.projector is not None:
            f0, projected = projected_output_gradients(self.model, self.projector,
                                                       self.outputs.output, batch)
        else:
            f0, projected = self.outputs.vmap_gradients(self.model, self.projection, batch)
        return f0.cpu().numpy(), projected.cpu().numpy()
