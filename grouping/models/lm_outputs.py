"""The model-output function of instruction tasks: the log-odds of an example's gold answer
(Grad-TAG, Sec. 3.1, for instruction tuning). Per answer position t, log p_t − log(1 − p_t)
for the gold token, then the first position's value or the mean over positions. It plays the
role of a binary task's logit: its loss −log σ(f) is the loss a task's examples are measured
by, in training and in the affinity estimate alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "decoder_input_ids")

def token_logodds(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p − log(1 − p) of each target token under softmax(logits): z_t − logsumexp_{j≠t} z_j,
    computed without forming 1 − p (stable when p is close to 1). [.., L, V], [.., L] → [.., L].
    """
    chosen = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    gold = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, targets.unsqueeze(-1), True)
    others = logits.masked_fill(gold, float("-inf"))
    return chosen - torch.logsumexp(others, dim=-1)

def token_logits(model: Callable, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, L, V] next-token logits at every target position (``model`` is the model, or any
    callable taking its keyword inputs).

    An encoder-decoder gets its padding mask as an additive [B, 1, 1, L] bias, which it
    applies as given to encoder self-attention and cross-attention alike: building that
    bias from a [B, L] mask branches on the mask's values, which vmap cannot trace.
    """
    inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
    if "decoder_input_ids" in inputs:
        blocked = (1 - inputs["attention_mask"][:, None, None, :]).float()
        inputs["attention_mask"] = blocked * torch.finfo(torch.float32).min
    return model(**inputs).logits

def logodds_from_logits(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """f(x) from the model's token logits [B, L, V]: the weighted gold-token log-odds, [B]."""
    logodds = token_logodds(logits.float(), batch["targets"])
    return (logodds * batch["logodds_weight"]).sum(-1)

def answer_logodds(model: Callable, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The output function f(x) of each example of the batch: [B]."""
    return logodds_from_logits(token_logits(model, batch), batch)
