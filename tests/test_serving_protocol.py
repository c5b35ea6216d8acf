"""The endpoint's rules without a server: incremental detokenization (o1jax/serving/
transcript.py) against whole decodes, for the char tokenizer and byte-level / SentencePiece
HF tokenizers (test_hf's), and the request rules of o1jax/serving/openai_schema.py."""

from __future__ import annotations

import random

import pytest

from o1jax.serving import openai_schema as oa, prompt_limits
from o1jax.serving.transcript import IncrementalText, Transcript
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking.state import Segment

THINK, CLOSE, ANSWER = Segment.THINKING, Segment.CLOSE, Segment.ANSWER
MIXED = "héllo wörld 你好 🎉🎉 12 + 7 = 19. ß∑ done, the model thinks about numbers; "


@pytest.fixture(scope="module")
def hf_tokenizers(tmp_path_factory):
  """{style: HFTokenizer}: test_hf's byte-level BPE (Qwen-like) and SentencePiece-style
  (Llama-2-like: byte fallback, a decoder that drops the first token's leading space)."""
  pytest.importorskip("tokenizers")
  test_hf = pytest.importorskip("test_hf")
  from o1jax import hf
  out = {}
  for style, base in (("byte_level", test_hf._train_tokenizer()),
                      ("sentencepiece", test_hf._sentencepiece_tokenizer())):
    d = tmp_path_factory.mktemp(style)
    test_hf._write_tokenizer(base, str(d), "qwen")
    out[style] = hf.HFTokenizer(str(d))
  return out


def _tokenizer(style, hf_tokenizers):
  return CharTokenizer() if style == "char" else hf_tokenizers[style]


def _texts(style, rng):
  if style == "char":
    alphabet = "abcdefghij 0123456789+-*/=()<>;:,.!?'\""
    return ("".join(rng.choice(alphabet) for _ in range(300)),
            "".join(rng.choice(alphabet) for _ in range(40)))
  words = MIXED.split(" ")
  return (" ".join(rng.choice(words) for _ in range(120)),
          " ".join(rng.choice(words) for _ in range(12)))


class _Counting:
  """A tokenizer whose decode counts the ids it is given (the decoding work)."""

  def __init__(self, tokenizer):
    self.tokenizer, self.decoded, self.calls = tokenizer, 0, 0

  def decode(self, ids, stop_at_eos=True):
    ids = list(ids)
    self.decoded += len(ids)
    self.calls += 1
    return self.tokenizer.decode(ids, stop_at_eos=stop_at_eos)


@pytest.mark.parametrize("style", ["char", "byte_level", "sentencepiece"])
def test_streamed_text_is_the_whole_decode(style, hf_tokenizers):
  """Thinking and answer pushed a few tokens per round (split characters included) stream
  exactly the text one decode of all their ids gives, never a U+FFFD piece; the final
  message agrees."""
  tok = _tokenizer(style, hf_tokenizers)
  eos = tok.eos_ids if style != "char" else (tok.eos_id,)
  rng = random.Random(0)
  if style == "byte_level":   # the fixture does split characters over tokens
    assert any("\ufffd" in tok.decode([i]) for i in tok.encode(MIXED))
  for trial in range(4):
    thinking, answer = _texts(style, rng)
    think_ids, answer_ids = tok.encode(thinking), tok.encode(answer) + [eos[0]]
    tokens = think_ids + [tok.end_think_id] + answer_ids
    segments = [THINK] * len(think_ids) + [CLOSE] + [ANSWER] * len(answer_ids)
    t = Transcript(tok, eos)
    reasoning, content, i = [], [], 0
    while i < len(tokens):
      k = 1 if trial == 0 else rng.randint(1, 6)
      r, c = t.add(tokens[i:i + k], segments[i:i + k])
      assert "\ufffd" not in r + c
      reasoning.append(r)
      content.append(c)
      i += k
    r, c = t.finish()
    reasoning.append(r)
    content.append(c)
    assert "".join(reasoning) == tok.decode(think_ids, stop_at_eos=False) == t.reasoning
    assert "".join(content) == tok.decode(answer_ids) == t.content
    if style == "byte_level":
      assert t.reasoning == thinking and t.content == answer


@pytest.mark.parametrize("style", ["char", "byte_level"])
def test_each_round_decodes_only_its_new_tokens(style, hf_tokenizers):
  """n tokens one per round: the decoder sees O(n) ids in all (a re-decode of the whole text
  each round would see n(n+1)/2, here about 60x more), and the final text is exact."""
  tok = _tokenizer(style, hf_tokenizers)
  ids = tok.encode(_texts(style, random.Random(1))[0])
  counting = _Counting(tok)
  stream = IncrementalText(counting)
  text = "".join(stream.push([i]) for i in ids) + stream.flush()
  assert text == tok.decode(ids, stop_at_eos=False)
  assert len(ids) >= 100
  assert counting.decoded <= 4 * len(ids), (counting.decoded, len(ids))
  t = Transcript(counting, (tok.eos_id,))
  counting.decoded = 0
  for i in ids:
    t.add([i], [THINK])
  t.finish()
  assert counting.decoded <= 4 * len(ids), (counting.decoded, len(ids))


def test_a_split_character_waits_then_flushes():
  """A byte-level character split over two tokens streams once whole; an incomplete one
  left at the end comes out as U+FFFD (what decode gives)."""
  class Bytes:   # ids are UTF-8 bytes; decode as a byte-level tokenizer does
    def decode(self, ids, stop_at_eos=True):
      return bytes(ids).decode("utf-8", errors="replace")
  s = IncrementalText(Bytes())
  e = "é".encode()
  assert s.push([ord("a"), e[0]]) == "a"
  assert s.push([e[1]]) == "é"
  assert s.push([e[0]]) == ""
  assert s.flush() == "\ufffd" and s.text == "aé\ufffd"


# -- request rules -----------------------------------------------------------------------------

def _chat(**fields):
  return oa.parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "1+1="}],
                                **fields})


TOOL = [{"type": "function", "function": {"name": "f"}}]


@pytest.mark.parametrize("fields, param", [
    (dict(tools=TOOL, tool_choice="required"), "tool_choice"),
    (dict(tools=TOOL, tool_choice={"type": "function", "function": {"name": "f"}}),
     "tool_choice"),
    (dict(functions=[{"name": "f"}], function_call={"name": "f"}), "function_call"),
    (dict(logprobs=True), "logprobs"),
    (dict(top_logprobs=3), "top_logprobs"),
    (dict(response_format={"type": "json_object"}), "response_format"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
     "response_format"),
    (dict(response_format="json"), "response_format"),
    (dict(modalities=["text", "audio"]), "modalities"),
    (dict(audio={"voice": "alloy", "format": "wav"}), "audio"),
    (dict(chat_template_kwargs={"enable_thinking": "no"}), "chat_template_kwargs.enable_thinking"),
    (dict(chat_template_kwargs={"enable_thinking": True, "tools": []}),
     "chat_template_kwargs.tools"),
    (dict(chat_template_kwargs=["enable_thinking"]), "chat_template_kwargs"),
])
def test_fields_that_would_change_the_answer_are_refused(fields, param):
  with pytest.raises(oa.ApiError) as e:
    _chat(**fields)
  assert e.value.status == 400 and e.value.param == param and param in e.value.message


def test_fields_that_change_nothing_are_ignored_and_listed():
  chat = _chat(tools=TOOL, tool_choice="auto", functions=[{"name": "f"}], function_call="none",
               logprobs=False, top_logprobs=0, response_format={"type": "text"},
               modalities=["text"], presence_penalty=0.5)
  assert chat.ignored == ("function_call", "functions", "logprobs", "modalities",
                          "presence_penalty", "response_format", "tool_choice", "tools",
                          "top_logprobs")
  assert chat.enable_thinking is None


def test_enable_thinking_false_is_a_zero_budget():
  plan = lambda chat: oa.plan_budget(chat, prompt_tokens=8, cache_len=320, close_tokens=1,
                                     max_answer_tokens=32, effort_scale=0.1)
  off = dict(chat_template_kwargs={"enable_thinking": False})
  for fields in ({}, dict(reasoning_effort="high"), dict(thinking_token_budget=50),
                 dict(max_completion_tokens=100)):
    p = plan(_chat(**fields, **off))
    assert (p.budget, p.source) == (0, "chat_template_kwargs.enable_thinking")
  on = plan(_chat(reasoning_effort="high", chat_template_kwargs={"enable_thinking": True}))
  assert (on.budget, on.source) == (200, "reasoning_effort:high")


# -- prompt size before tokenizing ---------------------------------------------------------------

class _CountingEncode:
  """An HF tokenizer whose encode counts the characters it is given."""

  def __init__(self, tokenizer):
    self._tokenizer, self.chars = tokenizer, 0

  def encode(self, text, **kw):
    self.chars += len(text)
    return self._tokenizer.encode(text, **kw)

  def __getattr__(self, name):
    return getattr(self._tokenizer, name)


@pytest.mark.parametrize("style", ["byte_level", "sentencepiece"])
def test_prefix_count_is_a_lower_bound_at_a_bounded_cost(style, hf_tokenizers):
  """A prompt refused by its prefixes really has more tokens than the bound (and than the
  room); a megabyte prompt is refused after tokenizing a few percent of it; a prompt that
  fits is never refused."""
  tok = hf_tokenizers[style]
  rng = random.Random(2)
  words = MIXED.split(" ") + ["", "\n", "a  b", "(x)", "1234567"]
  refused = 0
  for trial in range(30):
    room = rng.choice([64, 128, 300])
    text = " ".join(rng.choice(words) for _ in range(rng.randint(10, 900)))
    for prompt in (text, [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": text}]):
      if isinstance(prompt, str) and tok.use_chat_template:
        continue
      tokens = len(tok.encode_prompt(prompt))
      found = prompt_limits.prefix_tokens_beyond(tok, prompt, room)
      if found is not None:
        refused += 1
        assert tokens >= found[0] > room, (tokens, found, room)
      if tokens <= room:
        assert found is None
  assert refused >= 10   # the check did refuse (a check that never refuses proves nothing)
  counting = _CountingEncode(tok)
  huge = [{"role": "user", "content": " ".join(rng.choice(words) for _ in range(250_000))}]
  bound, counted, total = prompt_limits.prefix_tokens_beyond(counting, huge, 4096)
  assert total > 1_000_000 and bound > 4096
  assert counting.chars == counted <= 0.05 * total


def test_character_count_refuses_only_what_cannot_fit():
  """The char tokenizer's longest token is 8 characters ("</think>"): 8 x room characters
  may still fit (all "</think>"), one more cannot."""
  tok, room = CharTokenizer(), 50
  fits = "</think>" * room
  assert len(tok.encode(fits)) == room
  prompt_limits.check_characters(tok, _chat(messages=[{"role": "user", "content": fits}]),
                                 False, room, 704)
  with pytest.raises(oa.ApiError, match=r"401 characters.*at most 50 prompt tokens"):
    prompt_limits.check_characters(
        tok, _chat(messages=[{"role": "user", "content": fits + "x"}]), False, room, 704)
