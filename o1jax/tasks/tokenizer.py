"""Character-level tokenizer with the special tokens the thinking loop needs.

Every printable ASCII character is one token; `<think>`, `</think>`, end of sequence and
padding are single special tokens. Text containing the literal strings "<think>" or
"</think>" encodes them as the special tokens, so `decode(encode(s)) == s` for any
printable-ASCII string.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

PAD, EOS, THINK, END_THINK = 0, 1, 2, 3
THINK_TEXT, END_THINK_TEXT = "<think>", "</think>"
_NUM_SPECIAL = 4
_FIRST_CHAR, _LAST_CHAR = 32, 126  # printable ASCII, space to tilde


class TokenizerError(ValueError):
  """Raised for text the tokenizer cannot represent."""


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
  """Maps printable ASCII text to ids; ids 0..3 are PAD, EOS, <think>, </think>."""

  vocab_size: int = 128  # 4 specials + 95 chars, rounded up to a lane-friendly size

  pad_id: int = PAD
  eos_id: int = EOS
  think_id: int = THINK
  end_think_id: int = END_THINK

  def __post_init__(self):
    needed = _NUM_SPECIAL + _LAST_CHAR - _FIRST_CHAR + 1
    if self.vocab_size < needed:
      raise TokenizerError(f"vocab_size must be >= {needed}, got {self.vocab_size}")

  def encode(self, text: str, *, add_eos: bool = False) -> list[int]:
    ids: list[int] = []
    i = 0
    while i < len(text):
      if text.startswith(END_THINK_TEXT, i):
        ids.append(END_THINK)
        i += len(END_THINK_TEXT)
        continue
      if text.startswith(THINK_TEXT, i):
        ids.append(THINK)
        i += len(THINK_TEXT)
        continue
      code = ord(text[i])
      if not _FIRST_CHAR <= code <= _LAST_CHAR:
        raise TokenizerError(
            f"character {text[i]!r} at position {i} of {text[:40]!r} is outside the "
            "vocabulary (printable ASCII only)")
      ids.append(code - _FIRST_CHAR + _NUM_SPECIAL)
      i += 1
    if add_eos:
      ids.append(EOS)
    return ids

  def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
    out = []
    for t in ids:
      t = int(t)
      if t == EOS and stop_at_eos:
        break
      if t in (PAD, EOS):
        continue
      if t == THINK:
        out.append(THINK_TEXT)
      elif t == END_THINK:
        out.append(END_THINK_TEXT)
      elif _NUM_SPECIAL <= t <= _NUM_SPECIAL + _LAST_CHAR - _FIRST_CHAR:
        out.append(chr(t - _NUM_SPECIAL + _FIRST_CHAR))
      # ids past the character range (the rounded-up tail) decode to nothing
    return "".join(out)

  def encode_prompt(self, prompt: str) -> list[int]:
    """The context the thinking loop starts from: the prompt, then `<think>`."""
    return self.encode(prompt) + [THINK]

  def close_ids(self) -> tuple[int, ...]:
    """What a forced stop emits: just `</think>` (the answer follows directly)."""
    return (END_THINK,)

  def check_text(self, text: str) -> None:
    """Raises TokenizerError naming the first character outside the vocabulary."""
    self.encode(text)

  def pad_batch(self, seqs: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """Right-pads to `length`; raises if any sequence is longer."""
    out = np.full((len(seqs), length), PAD, np.int32)
    for i, s in enumerate(seqs):
      if len(s) > length:
        raise TokenizerError(f"sequence {i} has {len(s)} tokens, more than {length}")
      out[i, : len(s)] = s
    return out
