"""A request's tokens as text for the OpenAI endpoint: thinking and answer apart, stop
strings, and the new text since the last round for streaming, decoded incrementally."""

from __future__ import annotations

from o1jax.thinking.state import Segment

_REPLACEMENT = "\ufffd"   # what a decoder writes for an incomplete (or invalid) character


class IncrementalText:
  """Token ids in, text out, decoding O(new ids) per push (not the whole text each round).

  Only a window is decoded: the ids pushed since the last clean boundary, after the ids
  before that boundary as left context. The context matters because decoders change the
  text at the start of what they decode (SentencePiece-style ones drop the first token's
  leading space) and a byte-level token can hold part of a character: the window's text
  minus its context's text is what the new ids add. Text ending in an incomplete character
  (U+FFFD) is held back until the character completes, or until `flush`. The window slides
  forward whenever its text ends cleanly, so each id is decoded a few times at most.

  The concatenated output equals `tokenizer.decode(ids, stop_at_eos=False)` for decoders
  whose text at a clean boundary does not depend on what follows it (byte-level BPE,
  SentencePiece, the char tokenizer: tested)."""

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer
    self.ids: list[int] = []
    self.text = ""        # emitted so far
    self._start = 0       # the window's first id (a clean boundary)
    self._context = 0     # ids[_start:_context] are context, already emitted
    self._held = 0        # characters of the window's new text emitted so far

  def push(self, ids, final: bool = False) -> str:
    """Adds ids; returns the text they complete (with `final`, all that is left)."""
    n = len(self.ids)
    self.ids.extend(int(i) for i in ids)
    if len(self.ids) == n and not final:
      return ""
    decode = lambda a, b: self.tokenizer.decode(self.ids[a:b], stop_at_eos=False)
    context = decode(self._start, self._context) if self._context > self._start else ""
    window = decode(self._start, len(self.ids))
    # (A decoder that rewrote the context's end at the junction, e.g. a clean-up rule, would
    # make the window not start with it: what was emitted stays, the rest is cut by length.)
    new = window[len(context):]
    clean = not window.endswith(_REPLACEMENT)
    ready = new if (final or clean) else new.rstrip(_REPLACEMENT)
    delta = ready[self._held:] if len(ready) > self._held else ""
    self._held = max(self._held, len(ready))
    if clean or final:   # slide: what was new becomes the next window's context
      self._start, self._context, self._held = self._context, len(self.ids), 0
    self.text += delta
    return delta

  def flush(self) -> str:
    """Whatever is held back (an incomplete character as U+FFFD), once no ids will follow."""
    return self.push((), final=True)


class Transcript:
  """A request's tokens as text: thinking and answer apart (close markers dropped), stop
  strings applied to the answer, and the text new since the last call for streaming.

  Each round decodes only its new tokens (`IncrementalText`), so a long thinking costs
  linear work, not a re-decode of everything so far per round. Text that could be the start
  of a stop string is held back until it is known not to be one. Stop strings are applied
  to the decoded answer after the tokens are generated: the answer's tokens past one are
  counted in usage (they were computed). `reasoning` and `content` (the final message)
  decode all ids once, as think_texts does."""

  def __init__(self, tokenizer, eos_ids, stop: tuple[str, ...] = ()):
    self.tokenizer, self.eos_ids, self.stop = tokenizer, set(eos_ids), stop
    self.think_ids: list[int] = []
    self.answer_ids: list[int] = []    # as generated (its EOS included)
    self.thinking_over = False         # a close marker or an answer token has been seen
    self._thinking = IncrementalText(tokenizer)
    self._answer = IncrementalText(tokenizer)
    self._flushed_thinking = False
    self._answer_ended = False         # an EOS ended the answer's text
    self.answer = ""                   # the answer decoded so far (before stop strings)
    self.stop_at: int | None = None
    self._searched = 0                 # answer characters searched for stop strings
    self._emitted = 0                  # answer characters emitted

  def add(self, tokens, segments) -> tuple[str, str]:
    """Adds a round's tokens; returns (new thinking text, new answer text)."""
    think, answer = [], []
    for t, s in zip(tokens, segments):
      t = int(t)
      if s == Segment.THINKING:
        think.append(t)
      elif s == Segment.ANSWER:
        answer.append(t)
      # Forced "wait" tokens are THINKING; CLOSE only comes once thinking has ended.
      self.thinking_over |= s in (Segment.CLOSE, Segment.ANSWER)
    self.think_ids += think
    reasoning = self._thinking.push(think) if think else ""
    if self.thinking_over and not self._flushed_thinking:
      self._flushed_thinking = True
      reasoning += self._thinking.flush()
    self._add_answer(answer, final=False)
    return reasoning, self._answer_delta(final=False)

  def finish(self) -> tuple[str, str]:
    """(thinking, answer) text still held back, once the request is done."""
    reasoning = "" if self._flushed_thinking else self._thinking.flush()
    self._flushed_thinking = True
    self._add_answer([], final=True)
    return reasoning, self._answer_delta(final=True)

  def _add_answer(self, ids: list[int], final: bool) -> None:
    self.answer_ids += ids
    # The answer's text stops at its EOS, as decode(stop_at_eos=True) does.
    if self._answer_ended:
      ids = []
    eos = next((k for k, i in enumerate(ids) if i in self.eos_ids), None)
    if eos is not None:
      ids, self._answer_ended = ids[:eos], True
    if ids or final:
      self.answer += self._answer.push(ids, final=final)
    if self.stop and self.stop_at is None:
      # Only text that could hold a new match: from the longest stop's reach back.
      start = max(0, self._searched - max(map(len, self.stop)) + 1)
      found = [i for i in (self.answer.find(s, start) for s in self.stop) if i >= 0]
      self.stop_at = min(found) if found else None
      self._searched = len(self.answer)

  def _answer_delta(self, final: bool) -> str:
    end = len(self.answer) if self.stop_at is None else self.stop_at
    if not final and self.stop_at is None:
      end -= _stop_prefix(self.answer, self.stop)
    if end <= self._emitted:
      return ""
    delta, self._emitted = self.answer[self._emitted:end], end
    return delta

  @property
  def reasoning(self) -> str:
    """All the thinking text, decoded at once (the final message's)."""
    return self.tokenizer.decode(self.think_ids, stop_at_eos=False)

  @property
  def content(self) -> str:
    """The answer, decoded at once and cut before the first stop string."""
    answer = self.tokenizer.decode(self.answer_ids)
    found = [i for i in (answer.find(s) for s in self.stop) if i >= 0]
    return answer[:min(found)] if found else answer

  def finish_reason(self) -> str:
    """stop: a stop string or the model's EOS ended the answer; length: a cap cut it."""
    ended = bool(self.answer_ids) and self.answer_ids[-1] in self.eos_ids
    return "stop" if self.stop_at is not None or ended else "length"


def _stop_prefix(text: str, stops: tuple[str, ...]) -> int:
  """Length of the longest end of `text` that a stop string starts with (held back)."""
  held = 0
  for stop in stops:
    for k in range(min(len(stop) - 1, len(text)), held, -1):
      if text.endswith(stop[:k]):
        held = k
        break
  return held
