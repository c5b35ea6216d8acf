"""Refusing a prompt that cannot fit the context at a cost bounded by the context, not by the
prompt: a request body may hold a megabyte of text, and tokenizing all of it (seconds on a
CPU, with the GIL held by Hugging Face's `tokenizers`) would stall every other request.

Two checks, both lower bounds on the prompt's tokens (so a prompt that fits is never
refused):
  characters   the char tokenizer's longest token, "</think>", is 8 characters: a text of
               more than 8 x room characters has more than room tokens. No tokenizing.
  prefixes     otherwise (HF tokenizers), the text the tokenizer would encode is tokenized in
               growing prefixes, each cut at a space between two words: BPE and SentencePiece
               never merge across such a cut, so the prefix's tokens (less a small slack)
               are a lower bound on the whole's. A text too long for the context is refused
               after a few times the context's worth of text is tokenized.
"""

from __future__ import annotations

from o1jax.serving import openai_schema as oa
from o1jax.tasks.tokenizer import END_THINK_TEXT, CharTokenizer

# Tokens a prefix cut may count beyond the whole's (a SentencePiece-style normalizer that
# prepends a space marks the cut's word again): subtracted before comparing.
PREFIX_SLACK = 8
_CUT_SEARCH = 256   # how far back from a prefix's end a cut between two words is looked for


def user_chars(chat: oa.ChatRequest, template: bool) -> int:
  """Characters of text the prompt surely contains: the last user message for a tokenizer
  without a chat template; with one, system and user messages (a template may drop parts of
  others, as R1's drops earlier thinking)."""
  if template:
    return sum(len(m["content"]) for m in chat.messages if m["role"] in ("system", "user"))
  users = [m["content"] for m in chat.messages if m["role"] == "user"]
  return len(users[-1]) if users else 0


def check_characters(tokenizer, chat: oa.ChatRequest, template: bool, room: int,
                     cache_len: int) -> None:
  """ApiError(400) if the prompt's characters alone show it exceeds `room` tokens."""
  if not isinstance(tokenizer, CharTokenizer):
    return
  per_token, chars = len(END_THINK_TEXT), user_chars(chat, template)
  if chars > room * per_token:
    raise oa.bad_request(
        f"the prompt is too long: its text alone has {chars} characters, and the context "
        f"({cache_len} tokens) holds at most {room} prompt tokens of at most {per_token} "
        "characters each", "messages")


def _cut(text: str, size: int) -> int | None:
  """An index near `size` where a space separates two words (None if there is none)."""
  lo = max(1, size - _CUT_SEARCH)
  i = text.rfind(" ", lo, size)
  while i >= lo:
    if not text[i - 1].isspace() and i + 1 < len(text) and not text[i + 1].isspace():
      return i
    i = text.rfind(" ", lo, i)
  return None


def prefix_tokens_beyond(tokenizer, prompt, room: int) -> tuple[int, int, int] | None:
  """(a lower bound on the prompt's tokens, characters tokenized, characters in all) if the
  bound exceeds `room`; None if the prompt may fit (or the tokenizer renders no text)."""
  render = getattr(tokenizer, "prompt_text", None)
  if render is None:
    return None
  text = render(prompt)
  special = not getattr(tokenizer, "use_chat_template", False)
  size = 4 * (room + PREFIX_SLACK) + _CUT_SEARCH   # ~4 characters a token in most text
  while size < len(text):
    cut = _cut(text, size)
    if cut is not None:
      bound = len(tokenizer.encode(text[:cut], add_special_tokens=special)) - PREFIX_SLACK
      if bound > room:
        return bound, cut, len(text)
    size *= 2
  return None


def check_prefix_tokens(tokenizer, prompt, room: int, cache_len: int) -> None:
  """ApiError(400) if a prefix of the prompt already has more than `room` tokens."""
  found = prefix_tokens_beyond(tokenizer, prompt, room)
  if found is not None:
    bound, counted, total = found
    raise oa.bad_request(
        f"the prompt is too long: the first {counted} of its {total} characters are already "
        f"more than {bound} tokens, and the context ({cache_len} tokens) holds at most {room} "
        "prompt tokens", "messages")
