"""The serving engine without compile stalls or KV in the queue (issue 32): chunked prefill
equals an unchunked prefill and step-by-step decoding, whole outputs equal think()'s, nothing
compiles after warm-up over 20 prompt lengths up to the context (embedded model and a tiny
HF model), waiting requests hold no KV beyond the pre-prefill pool however long the queue,
and paused rows stay on the device up to the pause pool, then go to host."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax.model.cache import KVCache
from o1jax.model.decode import decode_step
from o1jax.serving import Engine, Request, Scheduler, SchedulerConfig
from o1jax.serving.chunked_prefill import prefill_row
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import make_think_config, prepare_inputs, think_texts
from o1jax.thinking.controller import prefill as unchunked_prefill
from o1jax.thinking.state import Segment

TOK = CharTokenizer()
CHUNK = 16      # small, so short prompts already span several chunks
SLOTS = 2       # one slot count (and config) for the module: engines share their programs
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture(scope="module")
def config(model):
  return make_think_config(model[1], TOK, max_answer_tokens=8)


class CompileCounter:
  """Backend compilations while in the `with` block (jit, eager ops, anything)."""

  def __enter__(self):
    self.events = []
    self._listener = lambda event, duration, **kw: (
        self.events.append(event) if event == _COMPILE_EVENT else None)
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._listener)

  @property
  def count(self) -> int:
    return len(self.events)


def _prompt(n_tokens: int) -> str:
  """A CharTokenizer prompt of exactly n_tokens with its <think> (an addition, then 1s)."""
  base = "12+34="
  text = base + "1" * max(0, n_tokens - 1 - len(base))
  text = text[: n_tokens - 1]
  assert len(TOK.encode_prompt(text)) == n_tokens
  return text


def _text(c, segment, tok=TOK):
  return tok.decode([t for t, s in zip(c.tokens, c.segments) if s == segment],
                    stop_at_eos=False)


def _one_row(tok, prompt, config, width):
  inputs = prepare_inputs(tok, [prompt], config, budgets=[None], width=width)
  return inputs.replace(request_key=jax.random.split(jax.random.key(0), 1))


@pytest.mark.parametrize("n_tokens", [16, 17, 70])   # one chunk exactly, one past, several
def test_chunked_prefill_equals_unchunked_and_step_by_step(model, config, n_tokens):
  params, mc = model
  prompt = _prompt(n_tokens)
  width = -(-config.cache_len // CHUNK) * CHUNK
  state, _ = prefill_row(params, _one_row(TOK, prompt, config, width), config, CHUNK, None)
  # The existing path: the whole prompt in one call at its bucketed width.
  logits, _, cache = jax.jit(unchunked_prefill, static_argnums=2)(
      params, _one_row(TOK, prompt, config, None), config)
  np.testing.assert_allclose(state.logits, logits, rtol=1e-5, atol=1e-5)
  for got, want in zip(state.cache.k + state.cache.v, cache.k + cache.v):
    np.testing.assert_allclose(got[:, :n_tokens], want[:, :n_tokens], rtol=1e-5, atol=1e-5)
  # An independent reference: the prompt fed one token at a time through decode_step.
  ids = TOK.encode_prompt(prompt)
  step_cache = KVCache.init(mc, 1, config.cache_len)
  for pos, t in enumerate(ids):
    step_logits, _, step_cache = decode_step(params, jnp.array([t]), jnp.array([pos]),
                                             step_cache, config=mc)
  np.testing.assert_allclose(state.logits, step_logits, rtol=1e-5, atol=1e-5)
  # The first token it picks (greedy) is step-by-step decoding's.
  assert int(jnp.argmax(state.logits[0])) == int(jnp.argmax(step_logits[0]))
  assert int(state.position[0]) == n_tokens


def test_whole_outputs_equal_think_alone_for_prompts_across_chunks(model, config):
  # Lengths below, at and past chunk boundaries, through both prefill paths: a pool of one
  # prefilled row, so most requests are prefilled straight into their slot at insert.
  params, _ = model
  lengths = [7, 16, 17, 33, 95]
  settings = [{}, {}, dict(temperature=0.8, top_k=20), {}, {}]
  reqs = [Request(_prompt(n), budget=[None, 12, None, 20, 6][i], seed=i, settings=settings[i],
                  id=str(i)) for i, n in enumerate(lengths)]
  engine = Engine(params, TOK, config, SLOTS, prefill_chunk=CHUNK, prefill_pool=1)
  sched = Scheduler(engine, SchedulerConfig(steps_busy=3))
  for r in reqs:
    sched.submit(r)
  first = sched.step()
  assert sum(t.prefix.has_kv for t in sched.waiting) <= 1
  done = {c.id: c for c in first + sched.run_until_idle()}
  # think() on each request alone, in one call (per-request seeds and settings: a row's
  # tokens do not depend on its neighbours), so one program is compiled for the reference.
  refs = think_texts(params, TOK, [r.prompt for r in reqs], config,
                     budgets=[r.budget for r in reqs], seed=[r.seed for r in reqs],
                     temperature=[r.settings.get("temperature", 0.0) for r in reqs],
                     top_k=[r.settings.get("top_k", 0) for r in reqs])
  for r, ref in zip(reqs, refs):
    got = done[r.id]
    assert _text(got, Segment.THINKING) == ref.thinking, r
    assert TOK.decode([t for t, s in zip(got.tokens, got.segments) if s == Segment.ANSWER]
                      ) == ref.answer, r
    assert (got.thinking_tokens, got.stop_reason) == (ref.thinking_tokens, ref.stop_reason)
  assert len({c.thinking_tokens for c in done.values()}) >= 3   # the reference has power


def _serve_stream(engine, prompts, tok):
  sched = Scheduler(engine, SchedulerConfig(steps_busy=4))
  for i, p in enumerate(prompts):
    sched.submit(Request(p, budget=2, seed=i, settings=dict(max_answer_tokens=2), id=str(i)))
  return sched.run_until_idle()


def test_no_compilation_after_warm_up_over_20_prompt_lengths(model, config):
  params, _ = model
  engine = Engine(params, TOK, config, SLOTS, prefill_chunk=CHUNK)
  engine.warm_up(["1+1="])
  longest = config.cache_len - config.reserve - 2        # budget 2
  lengths = np.linspace(5, longest, 20).astype(int)
  assert len(set(lengths)) == 20 and lengths.max() == longest
  with CompileCounter() as compiles:
    before = Engine.compilations()
    done = _serve_stream(engine, [_prompt(int(n)) for n in lengths], TOK)
  assert len(done) == 20 and all(c.answer_tokens > 0 for c in done)
  assert sorted(c.prompt_tokens for c in done) == sorted(lengths.tolist())
  assert compiles.count == 0, compiles.events
  assert Engine.compilations() == before
  # The counter counts: a prefill chunk width not warmed up compiles.
  with CompileCounter() as compiles:
    Engine(params, TOK, config, SLOTS, prefill_chunk=CHUNK * 2).prefill(Request("1+1="))
  assert compiles.count > 0


def test_no_compilation_after_warm_up_with_an_hf_model(tmp_path):
  """A tiny random Qwen3 with a BPE tokenizer and a chat template (test_hf's fixture):
  20 prompt lengths up to its context compile nothing, and greedy outputs equal think()."""
  pytest.importorskip("torch")
  import test_hf
  from o1jax import hf
  test_hf._build("qwen3", str(tmp_path), test_hf._train_tokenizer())
  params, mc, tok = hf.load_hf(str(tmp_path), max_seq_len=256)
  config = make_think_config(mc, tok, max_answer_tokens=4)
  words = "the model thinks about 12 + 7 and answers quickly".split()
  by_length = {}
  for n in range(1, 200):
    text = " ".join(words[i % len(words)] for i in range(n))
    by_length.setdefault(len(tok.encode_prompt(text)), text)
  longest = config.cache_len - config.reserve - 2
  fits = sorted(k for k in by_length if k <= longest)
  picks = [fits[int(i)] for i in np.linspace(0, len(fits) - 1, 20)]
  assert len(set(picks)) == 20 and picks[-1] > config.cache_len // 2
  engine = Engine(params, tok, config, SLOTS, prefill_chunk=32)
  engine.warm_up(["hi"])
  with CompileCounter() as compiles:
    done = _serve_stream(engine, [by_length[k] for k in picks], tok)
  assert len(done) == 20 and compiles.count == 0, compiles.events
  # Whole outputs equal think()'s for three of them (greedy; one think call, one program).
  chosen = [0, 9, 19]
  ref = think_texts(params, tok, [by_length[picks[i]] for i in chosen], config, budgets=2,
                    seed=[i for i in chosen], max_answer_tokens=2)
  got = {int(c.id): c for c in done}
  for i, r in zip(chosen, ref):
    assert _text(got[i], Segment.THINKING, tok) == r.thinking
    assert tok.decode([t for t, s in zip(got[i].tokens, got[i].segments)
                       if s == Segment.ANSWER]) == r.answer


def _device_bytes() -> int:
  gc.collect()
  return sum(a.nbytes for a in jax.live_arrays())


@pytest.mark.parametrize("queued", [6, 40])
def test_waiting_requests_hold_no_kv_beyond_the_pool(model, config, queued):
  params, _ = model
  pool = 1
  engine = Engine(params, TOK, config, SLOTS, prefill_chunk=CHUNK, prefill_pool=pool)
  row_bytes = engine.kv_bytes_per_token() * config.cache_len
  sched = Scheduler(engine, SchedulerConfig(steps_busy=2, steps_idle=2))
  sched.step()                                    # nothing queued: programs, slots in place
  base = _device_bytes()
  for i in range(queued):                         # every one thinks 40 tokens: none ends
    sched.submit(Request(_prompt(20 + i % 30), budget=40, min_thinking=40, seed=i))
  for _ in range(4):
    sched.step()
  assert len(sched.live) == SLOTS and sched.queue_depth == queued - SLOTS
  held = [t for t in sched.waiting if t.prefix.has_kv]
  assert len(held) <= pool and engine.waiting_kv_bytes() <= pool * row_bytes
  # Measured independently: every device array alive (slots and params were there before).
  # A waiting request without KV holds its token ids on host and a PRNG key on the device.
  grown = _device_bytes() - base
  assert grown <= pool * row_bytes + 64 * queued + (1 << 16), (grown, row_bytes)


def test_pool_places_free_when_prefixes_drop_and_prefetch_fills_them(model, config):
  params, _ = model
  engine = Engine(params, TOK, config, SLOTS, prefill_chunk=CHUNK, prefill_pool=1)
  first, second, third = engine.prefill_batch([Request(_prompt(n), seed=n) for n in (9, 30, 12)])
  assert [p.has_kv for p in (first, second, third)] == [True, False, False]
  assert second.inputs.tokens.shape[1] % CHUNK == 0 and second.state.keys.shape == (1,)
  assert engine.prefill_room() == 0 and not engine.prefetch(second)
  del first                                    # its place frees with it
  assert engine.prefill_room() == 1 and engine.prefetch(second) and engine.prefill_room() == 0
  # The prefetched row and a row prefilled at insert decode as rows prefilled at once do
  # (test_whole_outputs_... compares those paths with think()).
  def decode(engine, prefixes):
    for slot, prefix in enumerate(prefixes):
      engine.insert(prefix, slot)
    engine.generate(config.cache_len)
    v = engine.view()
    return [v.tokens[s, :v.num_generated[s]].tolist() for s in range(SLOTS)]

  eager = Engine(params, TOK, config, SLOTS, prefill_chunk=CHUNK, prefill_pool=2)
  want = decode(eager, eager.prefill_batch([Request(_prompt(n), seed=n) for n in (30, 12)]))
  assert decode(engine, [second, third]) == want and want[0] != want[1]


def test_paused_rows_stay_on_the_device_up_to_the_pool_then_go_to_host(model, config):
  params, _ = model
  reqs = [Request(_prompt(9 + 13 * i), seed=i, min_thinking=30,
                  settings=dict(temperature=0.7)) for i in range(2)]

  def run(pause):
    engine = Engine(params, TOK, config, SLOTS, prefill_chunk=CHUNK, pause_pool=1)
    for slot, r in enumerate(reqs):
      engine.insert(engine.prefill(r), slot)
    if pause:
      engine.generate(7)
      on_device = engine.evict(0)
      engine.generate(3)
      on_host = engine.evict(1)
      assert engine.pause_room() == 0
      assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(on_device))
      assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(on_host))
      assert 0 < engine.waiting_kv_bytes() == on_device.cache.nbytes
      engine.resume(on_host, 0)           # each into the other's slot
      engine.resume(on_device, 1)
      del on_device
      assert engine.pause_room() == 1 and engine.waiting_kv_bytes() == 0
    engine.generate(config.cache_len)
    v = engine.view()
    return [v.tokens[s, :v.num_generated[s]].tolist() for s in range(SLOTS)]

  plain, paused = run(False), run(True)
  assert paused == plain[::-1]


def test_bad_engine_settings_are_refused(model, config):
  params, _ = model
  with pytest.raises(ValueError, match="prefill_chunk must be >= 1"):
    Engine(params, TOK, config, SLOTS, prefill_chunk=0)
  with pytest.raises(ValueError, match="prefill_pool must be >= 0"):
    Engine(params, TOK, config, SLOTS, prefill_pool=-1)
  with pytest.raises(ValueError, match="pause_pool must be >= 0"):
    Engine(params, TOK, config, SLOTS, pause_pool=-2)
