"""Token tensors of instruction examples, padded to one length so that batches (and vmapped
single examples) share shapes.

Causal LM: ``[bos] prompt answer [eos]``; position t predicts token t + 1, so ``targets`` is
the sequence shifted by one. Encoder-decoder: the encoder reads ``prompt [eos]``, the decoder
reads ``[start] answer`` and predicts ``answer [eos]``. In both, ``answer_mask`` marks the
positions predicting the answer and the closing eos (the training loss and exact match), and
``logodds_weight`` the positions whose log-odds make the output function: the first answer
token, or every answer token with equal weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from grouping.models.lora_lm import LMSpec, TextTokenizer
from grouping.tasksets.instructions import InstructionTaskSet


@dataclass(frozen=True)
class EncodedExamples:
    """[n, L] tensors (``decoder_input_ids`` only for encoder-decoders)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    answer_mask: torch.Tensor
    logodds_weight: torch.Tensor
    decoder_input_ids: torch.Tensor | None = None

    def rows(self, index: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """The tensors of some examples, as a dict of model inputs and targets."""
        if not isinstance(index, torch.Tensor):
            index = torch.from_numpy(np.array(index, dtype=np.int64))
        picked = {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                  "targets": self.targets[index], "answer_mask": self.answer_mask[index],
                  "logodds_weight": self.logodds_weight[index]}
        if self.decoder_input_ids is not None:
            picked["decoder_input_ids"] = self.decoder_input_ids[index]
        return picked


def _weights(count: int, mode: str) -> list[float]:
    """Log-odds weights over the ``count`` answer positions (eos when the answer is empty)."""
    if mode == "first" or count == 0:
        return [1.0]
    return [1.0 / count] * count


def _pad(rows: list[list], value: float, dtype: torch.dtype) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=dtype)


def _causal(prompt: list[int], answer: list[int], tokenizer: TextTokenizer, mode: str,
            max_length: int) -> tuple[list[int], list[int], list[float], list[float]]:
    head = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
    room = max_length - len(head) - len(answer) - 1
    if room < 1:
        raise ValueError(f"an answer of {len(answer)} tokens leaves no room for its prompt "
                         f"within language_model.max_length {max_length}")
    sequence = head + prompt[-room:] + answer + [tokenizer.eos_id]
    start = len(sequence) - len(answer) - 2
    length = len(sequence) - 1
    mask = [0.0] * length
    weight = [0.0] * length
    for offset in range(len(answer) + 1):
        mask[start + offset] = 1.0
    for offset, value in enumerate(_weights(len(answer), mode)):
        weight[start + offset] = value
    return sequence[:-1], sequence[1:], mask, weight


def encode_examples(taskset: InstructionTaskSet, spec: LMSpec,
                    decoder_start_id: int | None = None) -> EncodedExamples:
    """Every example of the task set, encoded for ``spec``'s model and tokenizer."""
    tokenizer = TextTokenizer(spec)
    prompts = [tokenizer.encode(text) for text in taskset.prompts]
    answers = [tokenizer.encode(text) for text in taskset.answers]
    if not spec.seq2seq:
        parts = [_causal(prompt, answer, tokenizer, spec.answer_logodds, spec.max_length)
                 for prompt, answer in zip(prompts, answers)]
        inputs, targets, masks, weights = (list(column) for column in zip(*parts))
        return EncodedExamples(
            _pad(inputs, tokenizer.pad_id, torch.long),
            _pad([[1] * len(row) for row in inputs], 0, torch.long),
            _pad(targets, tokenizer.pad_id, torch.long), _pad(masks, 0.0, torch.float32),
            _pad(weights, 0.0, torch.float32))
    encoder = [prompt[-(spec.max_length - 1):] + [tokenizer.eos_id] for prompt in prompts]
    decoder = [[decoder_start_id] + answer for answer in answers]
    targets = [answer + [tokenizer.eos_id] for answer in answers]
    weights = [_weights(len(answer), spec.answer_logodds) for answer in answers]
    weights = [row + [0.0] * (len(target) - len(row)) for row, target in zip(weights, targets)]
    return EncodedExamples(
        _pad(encoder, tokenizer.pad_id, torch.long),
        _pad([[1] * len(row) for row in encoder], 0, torch.long),
        _pad(targets, tokenizer.pad_id, torch.long),
        _pad([[1.0] * len(row) for row in targets], 0.0, torch.float32),
        _pad(weights, 0.0, torch.float32), _pad(decoder, tokenizer.pad_id, torch.long))
