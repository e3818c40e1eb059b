"""Projected gradients of the instruction tasks' output function (the gold answer's
log-odds, :mod:`grouping.models.lm_outputs`) with respect to the LoRA parameters only, per
example, with torch.func (vmap of grad over a functional call of the model).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from grouping.affinity.gradients import split_parameters
from grouping.models.lm_outputs import answer_logodds


def lm_output_gradients(model: nn.Module, projection: dict[str, torch.Tensor],
                        batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Base outputs f0 [B] and projected gradients Pᵀ∇f [B, d] with respect to the parameters
    ``projection`` names (the LoRA parameters); every other parameter stays fixed."""
    model.eval()
    params, frozen = split_parameters(model, projection)

    def output(trainable: dict[str, torch.Tensor], example: dict[str, torch.Tensor]):
        single = {key: value.unsqueeze(0) for key, value in example.items()}
        values = {**trainable, **frozen}
        return answer_logodds(lambda **inputs: functional_call(model, values, args=(),
                                                               kwargs=inputs), single)[0]

    with torch.no_grad():
        f0 = answer_logodds(model, batch)
    per_row = vmap(grad(output), in_dims=(None, 0))(params, batch)
    projected = sum(per_row[name].flatten(1) @ projection[name] for name in params)
    return f0, projected

