"""A request's tokens as text for the OpenAI endpoint: thinking and answer apart, stop
strings, and the new text since the last round for streaming."""

from __future__ import annotations

from o1jax.thinking.state import Segment


class Transcript:
  """A request's tokens as text: thinking and answer apart (close markers dropped), stop
  strings applied to the answer, and the text new since the last call for streaming.

  Text is decoded from all ids so far and the new suffix emitted, so a multi-token character
  is never split; text that could be the start of a stop string is held back until it is
  known not to be one. Stop strings are applied to the decoded answer after the tokens are
  generated: the answer's tokens past one are counted in usage (they were computed)."""

  def __init__(self, tokenizer, eos_ids, stop: tuple[str, ...] = ()):
    self.tokenizer, self.eos_ids, self.stop = tokenizer, set(eos_ids), stop
    self.think_ids: list[int] = []
    self.answer_ids: list[int] = []
    self.streamed_reasoning = ""   # thinking text emitted so far
    self.thinking_over = False     # a close marker or an answer token has been seen
    self.answer = ""               # the answer decoded so far (before stop strings)
    self.stop_at: int | None = None
    self._emitted = 0              # answer characters emitted

  def add(self, tokens, segments) -> tuple[str, str]:
    """Adds a round's tokens; returns (new thinking text, new answer text)."""
    for t, s in zip(tokens, segments):
      if s == Segment.THINKING:
        self.think_ids.append(t)
      elif s == Segment.ANSWER:
        self.answer_ids.append(t)
      # Forced "wait" tokens are THINKING; CLOSE only comes once thinking has ended.
      self.thinking_over |= s in (Segment.CLOSE, Segment.ANSWER)
    self.answer = self.tokenizer.decode(self.answer_ids)
    if self.stop and self.stop_at is None:
      found = [i for i in (self.answer.find(s) for s in self.stop) if i >= 0]
      self.stop_at = min(found) if found else None
    return self._reasoning_delta(final=self.thinking_over), self._answer_delta(final=False)

  def finish(self) -> tuple[str, str]:
    """(thinking, answer) text still held back, once the request is done."""
    return self._reasoning_delta(final=True), self._answer_delta(final=True)

  @property
  def reasoning(self) -> str:
    return self.tokenizer.decode(self.think_ids, stop_at_eos=False)

  def _reasoning_delta(self, final: bool) -> str:
    """New thinking text; while thinking goes on, an incomplete last character waits."""
    text = self.reasoning if final else self.reasoning.rstrip("\ufffd")
    if not text.startswith(self.streamed_reasoning):
      return ""   # (a decoder that rewrote earlier text: the message keeps the full text)
    delta, self.streamed_reasoning = text[len(self.streamed_reasoning):], text
    return delta

  def _answer_delta(self, final: bool) -> str:
    end = len(self.answer) if self.stop_at is None else self.stop_at
    if not final and self.stop_at is None:
      end -= _stop_prefix(self.answer, self.stop)
      if self.answer.endswith("\ufffd"):
        end = min(end, len(self.answer.rstrip("\ufffd")))
    if end <= self._emitted:
      return ""
    delta, self._emitted = self.answer[self._emitted:end], end
    return delta

  @property
  def content(self) -> str:
    return self.answer if self.stop_at is None else self.answer[:self.stop_at]

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
