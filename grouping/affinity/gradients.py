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
                     tasks: torch.Tensor, per_head: Container[str] = ()
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Base logits [B] and projected output gradients [B, d] for rows (inputs[b], tasks[b]).

    ``projection`` maps each trainable parameter name to its [numel, d] block; the gradient
    is taken with respect to exactly those parameters (the rest stay fixed).

    ``per_head`` names the parameters that hold one row per head (row k: head k's, as a
    SIGN-MLP's heads and skip do), such that the model given only row k of each computes
    head k's logit alone. A row's gradient there is zero outside its own task's row, so each
    row is differentiated through its own rows only and projected against the block's rows
    of its head: the same Pᵀ∇f, at a cost that does not grow with the number of heads (a
    per-task skip is most of a wide task set's parameters).
    """
    model.eval()
    params, buffers = split_parameters(model, projection)
    with torch.no_grad():
        outputs = functional_call(model, {**params, **buffers}, (inputs,))
    own_params = [name for name in params if name in per_head]
    if not own_params:
        onehot = torch.nn.functional.one_hot(tasks, outputs.shape[1]).to(inputs.dtype)
        f0 = (outputs * onehot).sum(dim=1)

        def logit(trainable: dict[str, torch.Tensor], x: torch.Tensor, e: torch.Tensor):
            return _logit(model, {**trainable, **buffers}, x, e)

        per_row = vmap(grad(logit), in_dims=(None, 0, 0))(params, inputs, onehot)
        return f0, sum(per_row[name].flatten(1) @ projection[name] for name in params)
    f0 = outputs.gather(1, tasks[:, None])[:, 0]
    shared = {name: value for name, value in params.items() if name not in per_head}
    fixed = {name: value for name, value in buffers.items() if name not in per_head}
    own = {name: params[name][tasks] for name in own_params}
    own_fixed = {name: value[tasks] for name, value in buffers.items() if name in per_head}

    def own_logit(trainable: dict[str, torch.Tensor], rows: dict[str, torch.Tensor],
                  fixed_rows: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        heads = {name: row.unsqueeze(0) for name, row in {**rows, **fixed_rows}.items()}
        return functional_call(model, {**trainable, **heads, **fixed},
                               (x.unsqueeze(0),))[0, 0]

    shared_rows, own_rows = vmap(grad(own_logit, argnums=(0, 1)), in_dims=(None, 0, 0, 0))(
        shared, own, own_fixed, inputs)
    dim = next(iter(projection.values())).shape[1]
    projected = torch.zeros(len(tasks), dim, dtype=f0.dtype, device=f0.device)
    for name in params:
        if name in shared:
            projected = projected + shared_rows[name].flatten(1) @ projection[name]
            continue
        rows = own_rows[name].reshape(len(tasks), -1)
        blocks = projection[name].view(params[name].shape[0], rows.shape[1], dim)
        for task in tasks.unique():
            chosen = tasks == task
            projected[chosen] += rows[chosen] @ blocks[task]
    return f0, projected
