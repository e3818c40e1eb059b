"""A fixed character-level tokenizer for generated instruction tasks: no vocabulary file, the
same ids on every machine."""

from __future__ import annotations

import string

SPECIAL = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARACTERS = string.ascii_letters + string.digits + string.punctuation + " \n"


class CharTokenizer:
    """Ids 0–3 are pad, bos, eos and unk; then one id per printable ASCII character (and
    newline). Characters outside that set map to unk."""

    pad_id, bos_id, eos_id, unk_id = range(len(SPECIAL))

    def __init__(self) -> None:
        self.ids = {char: len(SPECIAL) + number for number, char in enumerate(CHARACTERS)}

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL) + len(CHARACTERS)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(char, self.unk_id) for char in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(CHARACTERS[i - len(SPECIAL)] for i in ids if i >= len(SPECIAL))
