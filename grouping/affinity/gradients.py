"""Output gradients at the base model: for each (example, task) row, the base logit
f0 = f_task(x; θ0) and the projected gradient g = Pᵀ ∇θ f_task(x; θ0) (Grad-TAG, Sec. 3.1),
computed per example with torch.func (vmap of grad), never one autograd call per example.

The pipeline's ``dense`` projection runs here (and in :mod:`grouping.affinity.lm_outputs` for
LM adapters), not in the hook engine of :mod:`grouping.affinity.hook_gradients`, which is no
slower (2,200 against 2,019 rows/s in the README's ``scripts/bench_gradients.py`` benchmark):
switching would change the last bits of the affinity matrices of existing runs, whose results
must stay bit-identical."""

from __future__ import annotations

from collections.abc import Container

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def _logit(model: nn.Module, params: dict[str, torch.Tensor], inputs: torch.Tensor,
           task_onehot: torch.Tensor) -> torch.Tensor:
    return functional_call(model, params, (inputs.unsqueeze(0),))[0] @ task_onehot


def split_parameters(model: nn.Module, names: Container[str]
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trainable, frozen): the parameters of ``model`` named in ``names``, detached, and the
    values that stay fixed: every other parameter, detached, then every buffer."""
    trainable = {name: param.detach() for name, param in model.named_parameters()
                 if name in names}
    frozen = {name: param.detach() for name, param in model.named_parameters()
              if name not in names}
    frozen.update(dict(model.named_buffers()))
    return trainable, frozen


def output_gradients(model: nn.Module, projection: dict[str, torch.Tensor], inputs: torch.Tensor,
                     tasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Base logits [B] and projected output gradients [B, d] for rows (inputs[b], tasks[b]).

    ``projection`` maps each trainable parameter name to its [numel, d] block; the gradient
    is taken with respect to exactly those parameters (the rest stay fixed).
    """
    model.eval()
    params, buffers = split_parameters(model, projection)
    num_heads = functional_call(model, {**params, **buffers}, (inputs[:1],)).shape[1]
    onehot = torch.nn.functional.one_hot(tasks, num_heads).to(inputs.dtype)

    def logit(trainable: dict[str, torch.Tensor], x: torch.Tensor, e: torch.Tensor):
        return _logit(model, {**trainable, **buffers}, x, e)

    with torch.no_grad():
        f0 = (functional_call(model, {**params, **buffers}, (inputs,)) * onehot).sum(dim=1)
    per_row = vmap(grad(logit), in_dims=(None, 0, 0))(params, inputs, onehot)
    projected = sum(per_row[name].flatten(1) @ projection[name] for name in params)
    return f0, projected
