"""Static configuration of the thinking loop and the enums its carry uses."""

from __future__ import annotations

import dataclasses
import enum

from o1jax.model.config import ModelConfig


class Phase(enum.IntEnum):
  THINKING = 0   # sampling hidden chain-of-thought tokens
  CLOSING = 1    # emitting a forced token sequence (the close string, an answer prefix, "wait")
  ANSWERING = 2  # sampling the answer
  DONE = 3


class StopReason(enum.IntEnum):
  """Why a sequence's thinking ended (recorded once, when it ends)."""
  NONE = 0        # still thinking when the loop ended (only if the cache filled up)
  NATURAL = 1     # the model closed its thinking itself
  BUDGET = 2      # the hard cap was reached and the close was forced
  CONFIDENCE = 3  # a probe (or a confidence head) was confident enough
  CONVERGED = 4   # the hidden states of the thinking stopped changing
  CONTEXT = 5     # the cache could not hold more thinking plus the answer
  GIVE_UP = 6     # the value head judged the thinking hopeless (confidence_estimate="head")


STOP_RULES = ("natural", "budget", "confidence", "converged")
DEFAULT_STOP_RULES = ("natural", "budget")
CONFIDENCE_ESTIMATES = ("probe", "head")
CONFIDENCE_READS = ("periodic", "step_ends")


@dataclasses.dataclass(frozen=True)
class SpeculativeConfig:
  """Speculative decoding inside the loop (o1jax/thinking/speculative.py).

  Each iteration a draft proposes `gamma` tokens and the policy checks them in one forward
  over gamma + 1 positions. The draft is the policy's own first `draft_layers` layers with
  its final norm and unembedding (self-speculative: nothing to train), or, with
  `draft_model` set, a separate model with the same vocabulary whose params are passed as
  think(..., draft_params=...).
  """
  gamma: int = 4
  draft_layers: int = 2
  draft_model: ModelConfig | None = None

  def __post_init__(self):
    if not isinstance(self.gamma, int) or self.gamma < 1:
      raise ValueError(f"SpeculativeConfig.gamma must be an integer >= 1, got {self.gamma!r}")
    if self.draft_model is None and (not isinstance(self.draft_layers, int)
                                     or self.draft_layers < 1):
      raise ValueError("SpeculativeConfig.draft_layers must be an integer >= 1, got "
                       f"{self.draft_layers!r}")


@dataclasses.dataclass(frozen=True)
class ThinkConfig:
  """Everything static about a thinking run: hashable, passed to `jit` as a static arg.

  Token sequences are tuples of ids. `close_ids` is forced when thinking is stopped from
  outside (budget, confidence, convergence, context); `answer_prefix_ids` follows every close,
  natural or forced; `wait_ids` is inserted when the model tries to close before the minimum.

  Two kinds of field. Those that shape the compiled program (the model, cache length, token
  ids, which stop rules exist, probe and window sizes) are static. The per-request values
  (temperature, top-k, top-p, the thresholds) are only *defaults*: they are copied into
  per-sequence arrays of the loop carry (`ThinkInputs` can override them per request), and
  `compile_key()` blanks them, so requests with any settings share one compiled program.
  """
  model: ModelConfig
  cache_len: int
  think_id: int
  end_think_id: int
  eos_id: int       # the EOS the loop writes as padding and bans while thinking
  pad_id: int
  # Every id that ends an answer: instruct models list several (Qwen: <|im_end|> and
  # <|endoftext|>; Llama 3: <|eot_id|> and <|end_of_text|>). Empty means (eos_id,).
  eos_ids: tuple[int, ...] = ()
  close_ids: tuple[int, ...] = ()
  answer_prefix_ids: tuple[int, ...] = ()
  wait_ids: tuple[int, ...] = ()
  stop_rules: tuple[str, ...] = DEFAULT_STOP_RULES
  max_answer_tokens: int = 32
  # sampling
  temperature: float = 0.0
  # The answer's own temperature (after `</think>`): None draws it at `temperature` like
  # the thinking; 0 answers greedily after sampled thinking (search: diverse reasoning,
  # the policy's best answer to each).
  answer_temperature: float | None = None
  top_k: int = 0
  top_p: float = 1.0
  # confidence probe
  probe_every: int = 16
  probe_answer_tokens: int = 8
  confidence_threshold: float = 0.95
  probe_agreement: int = 2    # also stop when this many previous probes gave the same answer
  # Where the `confidence` rule's estimate comes from (issue 7): "probe" decodes a trial
  # answer (above); "head" reads a trained confidence head (o1jax/model/heads.py) off the
  # hidden state the loop already has, every `probe_every` tokens, at no extra forward pass.
  # Its params come in through think(..., heads={"confidence": head}).
  confidence_estimate: str = "probe"
  # When the confidence estimate is taken: "periodic" every `probe_every` thinking tokens;
  # "step_ends" right after each thinking token in `step_end_ids` (a step's delimiter, ";"
  # for the task traces), where a finished step can make the answer known: a head trained at
  # step ends (launch/fit_step_head.py) is not asked mid-number, where it was never trained.
  confidence_reads: str = "periodic"
  step_end_ids: tuple[int, ...] = ()
  # With the head estimate, also stop a sequence whose value head (heads["value"]: P(the
  # answer ends right if thinking goes on)) falls below this: hopeless thinking is cut, which
  # costs no accuracy when the head is right; its stop reason is GIVE_UP. 0 turns it off; it
  # needs the `confidence` rule with the head estimate (the value head is read at its probes).
  give_up_threshold: float = 0.0
  # convergence
  converge_window: int = 50
  converge_threshold: float = 0.9
  # Thinking-KV eviction (o1jax/thinking/kv_eviction.py, R-KV style): at most this many
  # thinking tokens stay in the KV cache; past it, the least important and most redundant
  # one is overwritten. None: off (every token keeps its KV). The kv_evict_window most
  # recent thinking tokens are never evicted; kv_importance_weight is R-KV's lambda;
  # kv_evict_policy "oldest" (a sliding window over the thinking) is the baseline to beat.
  thinking_kv_budget: int | None = None
  kv_evict_window: int = 8
  kv_importance_weight: float = 0.1
  kv_evict_policy: str = "rkv"
  # Speculative decoding (None: one token per step). Static: it shapes the program.
  speculative: SpeculativeConfig | None = None

  def __post_init__(self):
    unknown = [r for r in self.stop_rules if r not in STOP_RULES]
    if unknown:
      raise ValueError(f"unknown stop rule(s) {unknown}; known: {', '.join(STOP_RULES)}")
    if "budget" not in self.stop_rules:
      # The budget is the contract of this library; it cannot be switched off, only set high.
      raise ValueError("stop rule 'budget' is always on; use a large budget to think longer")
    if not self.close_ids:
      object.__setattr__(self, "close_ids", (self.end_think_id,))
    if not self.eos_ids:
      object.__setattr__(self, "eos_ids", (self.eos_id,))
    elif self.eos_id not in self.eos_ids:
      object.__setattr__(self, "eos_ids", (self.eos_id,) + tuple(self.eos_ids))
    if self.end_think_id not in self.close_ids:
      raise ValueError("close_ids must contain the end-of-thinking token "
                       f"{self.end_think_id}, got {self.close_ids}")
    checks = [("cache_len", self.cache_len > 0), ("max_answer_tokens", self.max_answer_tokens > 0),
              ("probe_every", self.probe_every > 0),
              ("probe_answer_tokens", self.probe_answer_tokens > 0),
              ("converge_window", self.converge_window > 0),
              ("temperature", self.temperature >= 0), ("top_k", self.top_k >= 0),
              ("answer_temperature",
               self.answer_temperature is None or self.answer_temperature >= 0),
              ("top_p", 0 < self.top_p <= 1), ("probe_agreement", self.probe_agreement >= 0),
              # Above 1 the estimate never suffices: a probe then stops on answer
              # agreement alone (Dynasor's certaindex).
              ("confidence_threshold", 0 <= self.confidence_threshold),
              ("converge_threshold", -1 <= self.converge_threshold <= 1)]
    checks.append(("confidence_estimate", self.confidence_estimate in CONFIDENCE_ESTIMATES))
    checks.append(("give_up_threshold", 0 <= self.give_up_threshold <= 1))
    checks.append(("confidence_reads", self.confidence_reads in CONFIDENCE_READS))
    bad = [name for name, ok in checks if not ok]
    if bad:
      raise ValueError("invalid ThinkConfig values: " +
                       ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))
    if self.confidence_reads == "step_ends" and not self.step_end_ids:
      raise ValueError("confidence_reads='step_ends' needs step_end_ids: the token ids that "
                       "end a thinking step (e.g. the tokenizer's id for ';')")
    if self.give_up_threshold > 0 and not (self.rule("confidence")
                                           and self.confidence_estimate == "head"):
      raise ValueError(
          f"give_up_threshold={self.give_up_threshold} reads the value head at the confidence "
          "rule's head probes: it needs 'confidence' in stop_rules and "
          f"confidence_estimate='head' (got stop_rules={self.stop_rules}, "
          f"confidence_estimate={self.confidence_estimate!r})")
    if self.thinking_kv_budget is not None:
      from o1jax.thinking import kv_eviction  # local: it imports the model
      kv_eviction.check(self)
    if self.speculative is not None:
      self._check_speculative(self.speculative)

  def _check_speculative(self, spec: SpeculativeConfig) -> None:
    if self.thinking_kv_budget is not None:
      # An evicting cache's slots are not positions; verification writes by position.
      raise ValueError("speculative decoding does not support thinking-KV eviction "
                       "(thinking_kv_budget); use one or the other")
    if self.rule("confidence") and self.confidence_estimate == "probe":
      # A probe writes its trial answer into the cache slots after the current position,
      # which hold the candidates being verified: the two cannot share one cache.
      raise ValueError("speculative decoding does not support the confidence rule with "
                       "confidence_estimate='probe'; use confidence_estimate='head' or "
                       "speculative=None")
    if spec.draft_model is None:
      if spec.draft_layers >= self.model.num_layers:
        raise ValueError(f"SpeculativeConfig.draft_layers={spec.draft_layers} must be below "
                         f"the model's num_layers ({self.model.num_layers})")
    elif spec.draft_model.vocab_size != self.model.vocab_size:
      raise ValueError(f"the draft model's vocab_size ({spec.draft_model.vocab_size}) must "
                       f"equal the policy's ({self.model.vocab_size})")

  @property
  def reserve(self) -> int:
    """Cache slots kept free after thinking: the forced close, the prefix and the answer."""
    return len(self.close_ids) + len(self.answer_prefix_ids) + self.max_answer_tokens

  def rule(self, name: str) -> bool:
    return name in self.stop_rules

  @property
  def gives_up(self) -> bool:
    """Whether the value-head give-up check is compiled in (its threshold is per request)."""
    return self.give_up_threshold > 0

  def compile_key(self) -> "ThinkConfig":
    """This config with the per-request defaults blanked: what `think()` compiles for.

    Two configs that differ only in temperature, top-k/top-p or thresholds give one
    program; whether give-up exists at all stays static (it needs the value head).
    """
    return dataclasses.replace(
        self, temperature=0.0, answer_temperature=None, top_k=0, top_p=1.0,
        confidence_threshold=0.95,
        converge_threshold=0.9, give_up_threshold=0.5 if self.gives_up else 0.0)
