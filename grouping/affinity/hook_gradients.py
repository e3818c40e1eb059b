"""Projected output gradients for scale: g = Pᵀ ∇θ f(x; θ0) (Grad-TAG, Sec. 3.1) for the
trainable weights and biases of a model's ``nn.Linear`` layers, with any projector P of
:mod:`grouping.affinity.projectors`.

For a linear layer y = W a + b used at positions t = 1..T of an example (T = 1 without a
sequence), the per-example gradient of a scalar output f is ∂f/∂W = Σ_t δ_t a_tᵀ and
∂f/∂b = Σ_t δ_t, where δ_t = ∂f/∂y_t. One batched forward pass records each layer's inputs a
(forward hooks) and one batched backward pass gives every δ (autograd with respect to the layer
outputs): no per-example backward pass and no parameter gradient is ever computed. The output of
each row must depend on that row's inputs alone (model in eval mode, no batch statistics).

The gradient engines and why there are several: this hook engine serves every projection of
:func:`grouping.affinity.projectors.make_projector`, and the pipeline uses it for
``kronecker`` and ``kronecker+dense``. The pipeline's ``dense`` projection goes through vmap of
grad instead: :func:`grouping.affinity.gradients.output_gradients` for binary-label models and
:func:`grouping.affinity.lm_outputs.lm_output_gradients` for LM adapters. The hook engine is
not slower: the README's benchmark (``python scripts/bench_gradients.py``) measured 2,200
rows/s for its blocked dense projection against 2,019 rows/s for vmap with the same dense P.
The vmap path is kept for ``dense`` only because switching would change the last bits of the
affinity matrices of existing runs, whose results must stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from grouping.affinity.projectors import Projector

OutputFn = Callable[[nn.Module, object], torch.Tensor]


@dataclass(frozen=True)
class LinearLayer:
    """A linear layer y = W a + b as a projector sees it: its sizes and which of W, b train."""

    in_features: int
    out_features: int
    weight: bool
    bias: bool


@dataclass(frozen=True)
class LinearCall:
    """One call of a projected layer on a batch of B examples: its inputs a [B, T, in] and the
    output gradients δ = ∂f_b/∂y [B, T, out]. The call adds Σ_t δ_bt a_btᵀ to example b's
    weight gradient and Σ_t δ_bt to its bias gradient."""

    layer: str
    inputs: torch.Tensor
    deltas: torch.Tensor


def linear_layers(model: nn.Module) -> dict[str, LinearLayer]:
    """The ``nn.Linear`` modules of ``model`` with a trainable weight or bias, by module name
    (with PEFT LoRA, the ``lora_A``/``lora_B`` layers; frozen base layers are left out).

    Raises ValueError when some trainable parameter lies outside these layers."""
    layers: dict[str, LinearLayer] = {}
    covered: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        trainable = [param for param in module.parameters(recurse=False) if param.requires_grad]
        if trainable:
            bias = module.bias is not None and module.bias.requires_grad
            layers[name] = LinearLayer(module.in_features, module.out_features,
                                       module.weight.requires_grad, bias)
            covered.update(id(param) for param in trainable)
    outside = [name for name, param in model.named_parameters()
               if param.requires_grad and id(param) not in covered]
    if outside:
        raise ValueError(f"trainable parameters outside nn.Linear layers: {outside}; freeze "
                         "them or use grouping.affinity.gradients.output_gradients")
    return layers


def _record(uses: list, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
    uses.append((args[0].detach(), output, output._version))


@contextmanager
def _recording(model: nn.Module, layers: dict[str, LinearLayer]) -> Iterator[dict[str, list]]:
    """Records (input, output, output version) of every call of the given layers."""
    modules = dict(model.named_modules())
    records: dict[str, list] = {name: [] for name in layers}
    handles = [modules[name].register_forward_hook(partial(_record, records[name]))
               for name in layers]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def _per_example(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[B, ..., n] (batch first, any positions between) → [B, T, n]."""
    return tensor.reshape(batch_size, -1, tensor.shape[-1])


def projected_output_gradients(model: nn.Module, projector: Projector, output_fn: OutputFn,
                               batch: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Base outputs f0 = output_fn(model, batch) [B] and projected gradients Pᵀ∇θ f [B, d].

    ``output_fn`` returns one scalar per example; the gradient covers the layers of
    ``projector`` (the trainable ``nn.Linear`` layers it was built from). Features are computed
    in float32, or float64 for a float64 output.
    """
    model.eval()
    with torch.enable_grad(), _recording(model, projector.layers) as records:
        outputs = output_fn(model, batch)
    uses = [(name, inputs, output) for name, calls in records.items()
            for inputs, output, version in calls]
    changed = [name for name, calls in records.items()
               for _, output, version in calls if output._version != version]
    if changed:
        raise ValueError(f"outputs of {changed} were modified in place; their gradients are lost")
    deltas = torch.autograd.grad(outputs.sum(), [output for _, _, output in uses],
                                 allow_unused=True) if uses else ()
    size = len(outputs)
    calls = [LinearCall(name, _per_example(inputs, size), _per_example(delta, size))
             for (name, inputs, _), delta in zip(uses, deltas) if delta is not None]
    dtype = torch.promote_types(outputs.dtype, torch.float32)
    features = torch.zeros(size, projector.dim, device=outputs.device, dtype=dtype)
    return outputs.detach(), projector.project(calls, features)


def head_logits(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The output function of a multi-head model on rows (inputs [B, in], tasks [B]): the logit
    of each row's task head, [B]."""
    inputs, tasks = batch
    return model(inputs).gather(1, tasks[:, None])[:, 0]
