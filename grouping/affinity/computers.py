"""Gradient computers: the base model of either family, its inputs and its projection, held
together so that a worker builds them once and then turns chunks of (example, task) rows into
base outputs f0 and projected output gradients g."""

from __future__ import annotations

import numpy as np
import torch

from grouping.affinity.gradients import output_gradients
from grouping.affinity.lm_outputs import lm_output_gradients
from grouping.affinity.projection import dense_projection
from grouping.models import Spec, restore
from grouping.models.lora_lm import LMSpec
from grouping.tasksets import AnyTaskSet


class GradientComputer:
    """f0 and Pᵀ∇f for rows of the task set, at the base model θ0.

    The projection covers the trainable parameters: every parameter of a SIGN-MLP, the LoRA
    parameters of a language model.
    """

    def __init__(self, spec: Spec, state: dict[str, torch.Tensor], taskset: AnyTaskSet,
                 dim: int, seed: int) -> None:
        self.model = restore(spec, state)
        shapes = {name: param.shape for name, param in self.model.named_parameters()
                  if param.requires_grad}
        self.projection = dense_projection(shapes, dim, seed)
        if isinstance(spec, LMSpec):
            from grouping.lm_training import encode_for

            self.encoded = encode_for(self.model, taskset, spec)
        else:
            self.features = torch.tensor(taskset.features)

    def __call__(self, examples: np.ndarray, tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if hasattr(self, "encoded"):
            f0, projected = lm_output_gradients(self.model, self.projection,
                                                self.encoded.rows(examples))
        else:
            f0, projected = output_gradients(self.model, self.projection,
                                             self.features[torch.tensor(examples)],
                                             torch.tensor(tasks))
        return f0.numpy(), projected.numpy()
