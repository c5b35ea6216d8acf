"""HFTokenizer: a Hugging Face `tokenizer.json` + chat template behind the CharTokenizer interface.

The thinking loop duck-types its tokenizer (see o1jax/tasks/tokenizer.py): special ids as
attributes, `encode`, `encode_prompt` (the full context thinking starts from), `close_ids`
(what a forced stop emits), `decode` and `pad_batch`. For a chat model the context is the
chat template with the generation prompt, then `<think>` unless the template already opened
it (R1-Distill's does, Qwen3's does not).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import numpy as np

from o1jax.hf import chat_template
from o1jax.hf._deps import require
from o1jax.hf.config import read_json

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Qwen3's documented early-exit message (its model card): the model was trained to answer
# after it, so a forced stop reads as the model's own decision to stop.
QWEN3_CLOSE = ("Considering the limited time by the user, I have to give the solution based on "
               "the thinking directly now.\n</think>.\n\n")
DEFAULT_CLOSE = "\n</think>\n\n"
_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                  "mask_token")


def _token_text(value) -> str | None:
  """tokenizer_config stores special tokens as strings or AddedToken dicts."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) else None


def _first_id(value) -> int | None:
  if isinstance(value, list):
    value = value[0] if value else None
  return int(value) if isinstance(value, int) else None


class HFTokenizer:
  """Wraps `tokenizers.Tokenizer`; see the module docstring for the interface."""

  def __init__(self, tokenizer_dir: str, *, model_type: str | None = None,
               close_text: str | None = None, think_token: str = "<think>",
               end_think_token: str = "</think>", think_prefix: str | None = None,
               system_prompt: str | None = None, chat_template_source: str | None = None,
               use_chat_template: bool = True, require_thinking: bool | None = None,
               template_kwargs: dict[str, Any] | None = None):
    tokenizers = require("tokenizers")
    self.dir = tokenizer_dir
    path = os.path.join(tokenizer_dir, TOKENIZER_FILE)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} not found (only fast tokenizers saved as "
                              f"{TOKENIZER_FILE} are supported)")
    self._tok = tokenizers.Tokenizer.from_file(path)
    cfg_path = os.path.join(tokenizer_dir, TOKENIZER_CONFIG_FILE)
    tok_cfg = read_json(cfg_path) if os.path.isfile(cfg_path) else {}
    legacy_path = os.path.join(tokenizer_dir, "special_tokens_map.json")
    legacy = read_json(legacy_path) if os.path.isfile(legacy_path) else {}
    self.special_tokens = {n: t for n in _SPECIAL_NAMES
                           if (t := _token_text(tok_cfg.get(n, legacy.get(n)))) is not None}
    if model_type is None:
      model_cfg = os.path.join(tokenizer_dir, "config.json")
      model_type = read_json(model_cfg).get("model_type") if os.path.isfile(model_cfg) else None
    self.model_type = model_type

    self.eos_id = self._special_id("eos_token", tokenizer_dir)
    self.eos_ids = self._all_eos_ids(tokenizer_dir)
    pad = self.special_tokens.get("pad_token")
    self.pad_id = self._require_id(pad, "pad_token") if pad else self.eos_id
    bos = self.special_tokens.get("bos_token")
    self.bos_id = self._require_id(bos, "bos_token") if bos else None

    self.template = (chat_template_source if chat_template_source is not None else
                     chat_template.find_chat_template(tokenizer_dir, tok_cfg))
    self.use_chat_template = use_chat_template and self.template is not None
    self.system_prompt = system_prompt
    self.template_kwargs = dict(template_kwargs or {})

    self.think_token, self.end_think_token = think_token, end_think_token
    self._think_id = self._tok.token_to_id(think_token)
    self._end_think_id = self._tok.token_to_id(end_think_token)
    if require_thinking is None:  # a template that writes <think> belongs to a thinking model
      require_thinking = self.template is not None and think_token in self.template
    if require_thinking and not self.has_thinking:
      self._thinking_error()
    for text, tid in ((think_token, self._think_id), (end_think_token, self._end_think_id)):
      if tid is not None and self.encode(text) != [tid]:
        raise ValueError(f"{path}: {text!r} is in the vocabulary (id {tid}) but encodes as "
                         f"{self.encode(text)}; it must be an added token")
    self.think_prefix = think_token + "\n" if think_prefix is None else think_prefix
    if close_text is None:
      close_text = QWEN3_CLOSE if model_type == "qwen3" else DEFAULT_CLOSE
    self.close_text = close_text

  # -- special tokens ---------------------------------------------------------------------

  def _require_id(self, token: str, name: str) -> int:
    tid = self._tok.token_to_id(token)
    if tid is None:
      raise ValueError(f"{os.path.join(self.dir, TOKENIZER_CONFIG_FILE)}: {name} {token!r} is "
                       f"not in the vocabulary of {TOKENIZER_FILE}")
    return tid

  def _special_id(self, name: str, tokenizer_dir: str) -> int:
    token = self.special_tokens.get(name)
    if token is not None:
      return self._require_id(token, name)
    # No eos in tokenizer_config: fall back to the model's generation settings.
    for fname in ("generation_config.json", "config.json"):
      p = os.path.join(tokenizer_dir, fname)
      if os.path.isfile(p) and (tid := _first_id(read_json(p).get(f"{name}_id"))) is not None:
        return tid
    raise ValueError(f"no {name} in {os.path.join(tokenizer_dir, TOKENIZER_CONFIG_FILE)} "
                     "(nor an id in generation_config.json / config.json)")

  def _all_eos_ids(self, tokenizer_dir: str) -> tuple[int, ...]:
    """The tokenizer's EOS first, then every other id the generation settings end on.

    Instruct models list several (Qwen: <|im_end|> and <|endoftext|>; Llama 3: <|eot_id|>,
    <|eom_id|> and <|end_of_text|>); an answer may end with any of them.
    """
    ids = [self.eos_id]
    for fname in ("generation_config.json", "config.json"):
      p = os.path.join(tokenizer_dir, fname)
      value = read_json(p).get("eos_token_id") if os.path.isfile(p) else None
      for tid in value if isinstance(value, list) else [value]:
        if isinstance(tid, int) and tid not in ids:
          ids.append(tid)
    return tuple(ids)

  @property
  def has_thinking(self) -> bool:
    return self._think_id is not None and self._end_think_id is not None

  def _thinking_error(self):
    missing = [t for t, i in ((self.think_token, self._think_id),
                              (self.end_think_token, self._end_think_id)) if i is None]
    raise ValueError(f"{os.path.join(self.dir, TOKENIZER_FILE)} has no token for {missing}: "
                     "the thinking loop needs single tokens that open and close thinking "
                     "(pass think_token= / end_think_token= if this model names them differently)")

  @property
  def think_id(self) -> int:
    if self._think_id is None:
      self._thinking_error()
    return self._think_id

  @property
  def end_think_id(self) -> int:
    if self._end_think_id is None:
      self._thinking_error()
    return self._end_think_id

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  # -- text <-> ids -----------------------------------------------------------------------

  def encode(self, text: str, *, add_special_tokens: bool = False,
             add_eos: bool = False) -> list[int]:
    ids = self._tok.encode(text, add_special_tokens=add_special_tokens).ids
    return ids + [self.eos_id] if add_eos else ids

  def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                  **kwargs) -> str:
    """The chat template's text for `messages` (what `apply_chat_template(tokenize=False)`
    returns)."""
    if self.template is None:
      raise ValueError(f"{self.dir} has no chat template ({chat_template.TEMPLATE_FILE} or "
                       f"chat_template in {TOKENIZER_CONFIG_FILE})")
    return chat_template.render(self.template, messages,
                                add_generation_prompt=add_generation_prompt,
                                special_tokens=self.special_tokens,
                                **{**self.template_kwargs, **kwargs})

  def prompt_text(self, prompt: str | list[dict[str, Any]]) -> str:
    """The text thinking starts from (the special tokens in it are encoded as such)."""
    if not self.use_chat_template:
      if not isinstance(prompt, str):
        raise ValueError("a list of messages needs a chat template")
      return prompt + self.think_prefix
    messages = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                else list(prompt))
    if self.system_prompt is not None and isinstance(prompt, str):
      messages.insert(0, {"role": "system", "content": self.system_prompt})
    text = self.render_chat(messages, add_generation_prompt=True)
    if text.rstrip().endswith(self.end_think_token):
      raise ValueError("the chat template already closed thinking (enable_thinking=False in "
                       "template_kwargs?): there is nothing left to budget")
    # R1-Distill's generation prompt already ends with "<think>\n": do not open it twice.
    if not text.rstrip().endswith(self.think_token):
      text += self.think_prefix
    return text

  def encode_prompt(self, prompt: str | list[dict[str, Any]]) -> list[int]:
    # Templates write bos_token themselves, so (as transformers does) no post-processor
    # specials are added; without a template the tokenizer's own BOS rule applies.
    return self.encode(self.prompt_text(prompt), add_special_tokens=not self.use_chat_template)

  def close_ids(self) -> tuple[int, ...]:
    ids = tuple(self.encode(self.close_text))
    if self.end_think_id not in ids:
      raise ValueError(f"close_text {self.close_text!r} does not encode the end-of-thinking "
                       f"token {self.end_think_token!r}")
    return ids

  def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
    ids = [int(i) for i in ids]
    ends = [k for k, i in enumerate(ids) if i in self.eos_ids]
    if stop_at_eos and ends:
      ids = ids[:ends[0]]
    drop = set(self.eos_ids) | {self.pad_id}
    return self._tok.decode([i for i in ids if i not in drop], skip_special_tokens=False)

  def pad_batch(self, seqs: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """Right-pads to `length` with pad_id; raises if any sequence is longer."""
    out = np.full((len(seqs), length), self.pad_id, np.int32)
    for i, s in enumerate(seqs):
      if len(s) > length:
        raise ValueError(f"sequence {i} has {len(s)} tokens, more than {length}")
      out[i, : len(s)] = s
    return out

  def stream(self) -> "StreamDecoder":
    return StreamDecoder(self)


class StreamDecoder:
  """Turns ids arriving one by one into text deltas whose concatenation is `decode(ids)`.

  Decoding each token alone is wrong twice over: a byte-level BPE token can hold part of a
  UTF-8 character (decoded alone it is U+FFFD), and SentencePiece-style decoders drop the
  leading space of the first token. `tokenizers.decoders.DecodeStream` handles both (it
  holds text back while a character is incomplete); this adds what `decode` does besides
  (skipping EOS and padding), several ids per push, and `flush` at the end of a stream.
  """

  def __init__(self, tokenizer: HFTokenizer, skip_ids: Iterable[int] | None = None):
    decoders = require("tokenizers.decoders")
    if not hasattr(decoders, "DecodeStream"):
      raise ImportError("HFTokenizer.stream() needs tokenizers>=0.21 (DecodeStream); "
                        "upgrade with: pip install -U tokenizers")
    self._new_stream = lambda: decoders.DecodeStream(skip_special_tokens=False)
    self._tok = tokenizer._tok
    # What `decode` drops: every EOS id and padding.
    self._skip = set((*tokenizer.eos_ids, tokenizer.pad_id) if skip_ids is None else skip_ids)
    self._stream = self._new_stream()
    self._ids: list[int] = []  # since the last flush
    self._emitted = ""         # ... and the text emitted for them
    self.text = ""

  def push(self, ids: int | Iterable[int]) -> str:
    """Adds ids; returns the text they complete ("" while a character is incomplete)."""
    ids = [ids] if isinstance(ids, (int, np.integer)) else ids
    out = []
    for i in ids:
      if int(i) in self._skip:
        continue
      self._ids.append(int(i))
      out.append(self._stream.step(self._tok, int(i)) or "")  # None: held back
    delta = "".join(out)
    self._emitted += delta
    self.text += delta
    return delta

  def flush(self) -> str:
    """Emits whatever is held back (an incomplete character decodes as U+FFFD); pushes
    after it start a new stream."""
    whole = self._tok.decode(self._ids, skip_special_tokens=False)
    if not whole.startswith(self._emitted):  # DecodeStream's contract; checked, not assumed
      raise RuntimeError(f"streamed text {self._emitted!r} is not a prefix of the decoded "
                         f"text {whole!r}")
    delta = whole[len(self._emitted):]
    self._stream, self._ids, self._emitted = self._new_stream(), [], ""
    self.text += delta
    return delta
