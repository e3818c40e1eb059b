"""SIGN-MLP (Frasca et al., "SIGN: Scalable Inception Graph Neural Networks", 2020):
precomputed propagated node features feed an MLP trunk; each task has its own logit head,
optionally with a per-task linear skip from the input features (a wide-and-deep layout:
Cheng et al., "Wide & Deep Learning for Recommender Systems", 2016), so that the model
contains one linear model per task."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from grouping.config import ModelConfig
from grouping.models.per_task_linear import PerTaskLinear


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model on another worker (with a state dict)."""

    in_dim: int
    hidden: tuple[int, ...]
    num_heads: int
    dropout: float = 0.0
    skip: bool = False
    skip_trainable: bool = True

    @classmethod
    def from_config(cls, config: ModelConfig, in_dim: int, num_heads: int) -> ModelSpec:
        """The spec of ``config``'s model over ``in_dim`` features with ``num_heads`` heads."""
        return cls(in_dim, tuple(config.hidden), num_heads, config.dropout, config.skip,
                   config.skip_init != "linear_fixed")

    def as_dict(self) -> dict:
        """Plain values that ``torch.load(weights_only=True)`` reads back."""
        return asdict(self)

    def restore(self, state: dict[str, torch.Tensor]) -> SignMLP:
        """The model of this spec holding ``state``."""
        return restore_model(self, state)


class SignMLP(nn.Module):
    """MLP trunk (Linear-ReLU per hidden width) and ``num_heads`` linear logit heads.

    The heads are stored as one ``nn.Linear(hidden[-1], num_heads)``: row k is head k. With
    ``spec.skip``, ``skip`` (``nn.Linear(in_dim, num_heads, bias=False)``, row k task k's) adds
    a linear function of the input to each logit: z_k = w_k·h(x) + b_k + u_k·x. The skip is
    task-specific, not part of the shared ``trunk``; without ``spec.skip_trainable`` it is
    kept fixed (no gradient).
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = spec.in_dim
        for size in spec.hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            width = size
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.Linear(width, spec.num_heads)
        self.skip = nn.Linear(spec.in_dim, spec.num_heads, bias=False) if spec.skip else None
        if self.skip is not None:
            self.skip.weight.requires_grad_(spec.skip_trainable)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """[batch, in_dim] → [batch, num_heads] logits."""
        logits = self.heads(self.trunk(inputs))
        return logits if self.skip is None else logits + self.skip(inputs)


def restore_model(spec: ModelSpec, state: dict[str, torch.Tensor]) -> SignMLP:
    """A model rebuilt from its spec and a saved state (the initialisation is overwritten)."""
    model = SignMLP(spec)
    model.load_state_dict(state)
    return model


HEAD_PARAMETERS = ("heads.", "skip.")
"""State entries with one row per head (the rows :func:`select_heads` picks)."""


def select_heads(model: SignMLP, spec: ModelSpec, heads: np.ndarray) -> SignMLP:
    """A copy of ``model`` (of ``spec``) with only the heads ``heads``, in that order: head k
    of the copy is head ``heads[k]`` of ``model``, trunk and skip rows included, so that the
    copy's logits are ``model``'s columns ``heads``. Training it moves exactly what training
    ``model`` with only those heads in the loss moves, at the cost of |heads| heads instead
    of all (the skip over the input is most of a wide task set's parameters). The global
    random state is left as it was."""
    index = torch.as_tensor(np.asarray(heads), dtype=torch.long)
    state = {name: (value[index.to(value.device)] if name.startswith(HEAD_PARAMETERS)
                    else value).clone()
             for name, value in model.state_dict().items()}
    with torch.random.fork_rng(devices=[]):
        copied = restore_model(replace(spec, num_heads=len(index)), state)
    return copied.to(next(model.parameters()).device)


@torch.no_grad()
def write_heads(model: SignMLP, heads: np.ndarray, source: SignMLP) -> None:
    """Copy ``source`` (a :func:`select_heads` copy of ``model`` for ``heads``) back into
    ``model``: its trunk, and its head k into head ``heads[k]``; other heads stay."""
    targets = model.state_dict()
    index = torch.as_tensor(np.asarray(heads), dtype=torch.long,
                            device=next(model.parameters()).device)
    for name, value in source.state_dict().items():
        if name.startswith(HEAD_PARAMETERS):
            targets[name][index] = value
        else:
            targets[name].copy_(value)


def build_model(spec: ModelSpec, seed: int, linear: PerTaskLinear | None = None) -> SignMLP:
    """A freshly initialised model, seeded. With ``linear`` (one regression per head, the
    spec's skip on), the skip and the head biases start at the per-task logistic regression
    and the heads' trunk weights at zero, so the untrained model's logits are the
    regressions' (the trunk stays randomly initialised and gets gradients through the
    heads). A fixed skip (``spec.skip_trainable`` off) needs ``linear``."""
    if spec.skip and not spec.skip_trainable and linear is None:
        raise ValueError("a fixed skip needs the per-task regressions it is fixed at")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = SignMLP(spec)
    torch.random.set_rng_state(generator_state)
    if linear is not None:
        if model.skip is None or linear.weights.shape != tuple(model.skip.weight.shape):
            raise ValueError("a linear start needs the skip and one regression per head")
        with torch.no_grad():
            model.skip.weight.copy_(torch.tensor(linear.weights))
            model.heads.bias.copy_(torch.tensor(linear.intercepts))
            model.heads.weight.zero_()
    return model
