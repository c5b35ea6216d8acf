"""Parity of o1jax.hf with transformers on tiny random-weight Qwen2 / R1-Distill / Qwen3 / Llama
checkpoints built locally (no hub), plus export, sharding, tokenizer and bad-input checks."""

import json
import os
import random
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
pytest.importorskip("jinja2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# On a small shared CPU, torch's intra-op threads fight JAX and each other: one thread made a
# tiny model's generate 40x faster here under load.
torch.set_num_threads(1)
transformers.utils.logging.disable_progress_bar()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from o1jax import hf  # noqa: E402
from o1jax.model import forward  # noqa: E402
from o1jax.model.decode import greedy_decode  # noqa: E402
from o1jax.thinking import Segment, StopReason  # noqa: E402

QWEN_TEMPLATE = """{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- "# Tools\\n\\n<tools>" }}
{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
{{- "\\n</tools><|im_end|>\\n" }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(last_user=0) %}
{%- for message in messages %}{%- if message.role == 'user' %}
{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}
{%- for message in messages %}
  {%- if message.role == 'system' %}{%- continue %}{%- endif %}
  {%- if message.role not in ['user', 'assistant'] %}
    {{- raise_exception('unknown role ' + message.role) }}
  {%- endif %}
  {%- set content = message.content %}
  {%- if message.role == 'assistant' and '</think>' in content %}
    {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
  {%- endif %}
  {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\\n' }}
  {%- if enable_thinking is defined and enable_thinking is false %}
    {{- '<think>\\n\\n</think>\\n\\n' }}
  {%- endif %}
{%- endif %}"""
# The shape of DeepSeek-R1-Distill's template: the generation prompt already opens <think>.
R1_TEMPLATE = ("{% if not add_generation_prompt is defined %}"
               "{% set add_generation_prompt = false %}{% endif %}"
               "{% set ns = namespace(system_prompt='') %}{%- for message in messages %}"
               "{%- if message['role'] == 'system' %}"
               "{% set ns.system_prompt = message['content'] %}"
               "{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"
               "{%- for message in messages %}{%- if message['role'] == 'user' %}"
               "{{'<｜User｜>' + message['content']}}{%- endif %}"
               "{%- if message['role'] == 'assistant' %}{% set content = message['content'] %}"
               "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}"
               "{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}"
               "{%- endfor %}{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}"
               "{% endif %}")
# Multi-line without "-": exercises trim_blocks / lstrip_blocks and strftime_now.
LLAMA_TEMPLATE = """{{ bos_token }}
{% if messages[0]['role'] == 'system' %}
{% set system = messages[0]['content'] %}
{% set messages = messages[1:] %}
{% else %}
{% set system = 'Today is ' + strftime_now('%d %b %Y') %}
{% endif %}
<|start_header_id|>system<|end_header_id|>

{{ system }}<|eot_id|>
{% for message in messages %}
    {% if message['role'] == 'tool' %}
<|start_header_id|>ipython<|end_header_id|>

{{ message['content'] | tojson }}<|eot_id|>
    {% else %}
<|start_header_id|>{{ message['role'] }}<|end_header_id|>

{{ message['content'] | trim }}<|eot_id|>
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<｜begin▁of▁sentence｜>",
            "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<|begin_of_text|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
STYLES = {  # template, bos, eos, pad
    "qwen": (QWEN_TEMPLATE, None, "<|im_end|>", "<|endoftext|>"),
    "r1": (R1_TEMPLATE, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "llama": (LLAMA_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>", None),
}
DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, vocab_size=352)
KINDS = {  # config class, extra config, tokenizer style
    "qwen2_tied": ("Qwen2Config", dict(tie_word_embeddings=True), "qwen"),
    "r1_distill": ("Qwen2Config", dict(tie_word_embeddings=False, rope_theta=50000.0), "r1"),
    "qwen3": ("Qwen3Config", dict(head_dim=32, tie_word_embeddings=True, rope_theta=1e6), "qwen"),
    "llama3": ("LlamaConfig", dict(tie_word_embeddings=False, rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
        high_freq_factor=4.0, original_max_position_embeddings=64)), "llama"),
}
PROMPTS = ["What is 12 + 7?", "hello world", "Count: one two three four five six seven"]


def _lines():
  rng = random.Random(0)
  words = "the a model thinks about numbers and answers quickly héllo wörld 你好 🎉 <tag>".split()
  for i in range(3000):
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    yield f"{a} + {b} = {a + b}. " + " ".join(rng.choice(words) for _ in range(6))


def _train_tokenizer():
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(_lines(), trainers.BpeTrainer(
      vocab_size=320, special_tokens=SPECIALS,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  # As in R1 / Qwen3, the thinking markers are added tokens that are not "special".
  tok.add_tokens([AddedToken(t, special=False, normalized=False)
                  for t in ("<think>", "</think>")])
  return tok


@pytest.fixture(scope="module")
def base_tokenizer():
  return _train_tokenizer()


def _write_tokenizer(tok, d, style):
  template, bos, eos, pad = STYLES[style]
  tok.save(os.path.join(d, "tokenizer.json"))
  cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
         "pad_token": pad, "chat_template": template, "model_max_length": 256}
  with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
    json.dump(cfg, f, ensure_ascii=False)


def _build(kind, d, tok, seed=0):
  cls, extra, style = KINDS[kind]
  _, bos, eos, pad = STYLES[style]
  ids = {f"{n}_token_id": tok.token_to_id(t) if t else None
         for n, t in (("bos", bos), ("eos", eos), ("pad", pad))}
  torch.manual_seed(seed)
  config = getattr(transformers, cls)(**DIMS, **extra, **ids)
  model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
  with torch.no_grad():  # HF's init is too flat for robust greedy ties, and zeroes biases
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1 + 0.2 * torch.randn_like(p))
      else:
        p.normal_(0, 0.3 if name.endswith("bias") else 0.15)
  model.save_pretrained(d)
  _write_tokenizer(tok, d, style)
  return model


@pytest.fixture(scope="module")
def models(tmp_path_factory, base_tokenizer):
  out = {}
  for kind in KINDS:
    d = str(tmp_path_factory.mktemp(kind))
    out[kind] = (d, _build(kind, d, base_tokenizer))
  # R1-Distill's real config.json predates transformers 5: rewrite it in the older style.
  path = os.path.join(out["r1_distill"][0], "config.json")
  cfg = json.load(open(path))
  cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
  cfg["rope_scaling"] = None
  cfg["torch_dtype"] = cfg.pop("dtype")
  json.dump(cfg, open(path, "w"))
  return out


@pytest.fixture(scope="module")
def loaded(models):
  return {kind: hf.load_hf(d) for kind, (d, _) in models.items()}


def _ours_logits(params, config, seqs):
  width = max(map(len, seqs))
  tokens = np.zeros((len(seqs), width), np.int32)
  positions = np.full((len(seqs), width), -1, np.int32)
  for i, s in enumerate(seqs):
    tokens[i, : len(s)], positions[i, : len(s)] = s, np.arange(len(s))
  logits, _, _ = jax.jit(forward, static_argnames="config")(params, tokens, positions, None,
                                                            config=config)
  return np.asarray(logits)


def _hf_logits(model, seqs):
  width = max(map(len, seqs))
  ids = torch.zeros((len(seqs), width), dtype=torch.long)
  mask = torch.zeros_like(ids)
  for i, s in enumerate(seqs):
    ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
  with torch.no_grad():
    return model(input_ids=ids, attention_mask=mask).logits.numpy()


def _assert_bitwise(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _max_diff(a, b, seqs):
  return max(float(np.abs(a[i, : len(s)] - b[i, : len(s)]).max()) for i, s in enumerate(seqs))


def _hf_greedy(model, ids, n, **kw):
  with torch.no_grad():
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                                        dtype=torch.long),
                         do_sample=False, max_new_tokens=n, pad_token_id=0, **kw)
  return out[0, len(ids):].tolist()


@pytest.mark.parametrize("kind", list(KINDS))
def test_logits_parity(kind, models, loaded):
  _, model = models[kind]
  params, config, tok = loaded[kind]
  seqs = [tok.encode_prompt(p) for p in PROMPTS] + [tok.encode("1 + 2 = 3")]  # padded batch
  diff = _max_diff(_ours_logits(params, config, seqs), _hf_logits(model, seqs), seqs)
  print(f"{kind}: max |logits diff| = {diff:.2e}")
  assert diff <= 1e-4


# Each model's compile costs seconds on this CPU, so greedy_decode runs on R1-Distill (biases,
# untied head, old-style config) and Llama 3 (rope scaling); Qwen3 goes through think() below,
# and every family's logits are compared above.
@pytest.mark.parametrize("kind", ["r1_distill", "llama3"])
def test_greedy_decode_matches_generate(kind, models, loaded, monkeypatch):
  _, model = models[kind]
  params, config, tok = loaded[kind]
  seqs = [tok.encode_prompt(p) for p in PROMPTS]
  n = 40
  # Neither side stops at EOS (random weights emit it early; eos_id=-1 never matches), so all
  # 40 tokens are compared, EOS included.
  assert model.generation_config.eos_token_id == tok.eos_id
  monkeypatch.setattr(model.generation_config, "eos_token_id", None)
  ours, _ = greedy_decode(params, config, tok.pad_batch(seqs, max(map(len, seqs))),
                          np.array([len(s) for s in seqs]), n, eos_id=-1)
  for i, s in enumerate(seqs):
    assert ours[i].tolist() == _hf_greedy(model, s, n), (kind, i)


def test_think_matches_hf_greedy(models, loaded):
  """think() starts from encode_prompt and suppresses EOS while thinking. Prompt 0 thinks
  freely: HF greedy from the same ids with EOS suppressed must agree until the answer ends with
  EOS. Prompt 1 has a budget of 6: 6 HF greedy tokens, the forced close (Qwen3's message),
  then HF greedy from that context with EOS allowed."""
  from o1jax.thinking import make_think_config, prepare_inputs, think
  kind = "qwen3"
  _, model = models[kind]
  params, config, tok = loaded[kind]
  prompts, budgets = PROMPTS[:2], [100, 6]
  cfg = make_think_config(config, tok, 256, max_answer_tokens=16)
  r = jax.tree.map(np.asarray, think(params, prepare_inputs(tok, prompts, cfg, budgets=budgets),
                                     cfg, jax.random.key(0)))
  got = [r.tokens[b, : int(r.num_generated[b])].tolist() for b in range(2)]

  free = got[0][: budgets[0]] if r.stop_reason[0] == StopReason.BUDGET else got[0]
  if free[-1] == tok.eos_id and r.segments[0, len(free) - 1] == Segment.ANSWER:
    free = free[:-1]
  ids = tok.encode_prompt(prompts[0])
  theirs = _hf_greedy(model, ids, len(free), suppress_tokens=[tok.eos_id])
  assert len(free) >= 32 and free == theirs

  assert r.stop_reason[1] == StopReason.BUDGET and r.thinking_tokens[1] == 6
  close = list(tok.close_ids())
  assert close == tok.encode(hf.QWEN3_CLOSE)
  ids = tok.encode_prompt(prompts[1])
  thinking = _hf_greedy(model, ids, 6, suppress_tokens=[tok.eos_id])
  answer = _hf_greedy(model, ids + thinking + close, 16, eos_token_id=tok.eos_id)
  assert got[1] == thinking + close + answer

  # The text API runs the same compiled program (same config and shapes).
  thoughts = hf.think_on_hf((params, config, tok), prompts, budgets, cache_len=256,
                            max_answer_tokens=16)
  k = int(r.thinking_tokens[0])
  assert thoughts[0].thinking == tok.decode(theirs[:k], stop_at_eos=False)
  assert thoughts[1].answer == tok.decode(answer)

  # With the default cache length, calls with other prompts and budgets land in the same
  # power-of-two buckets: the second call compiles nothing.
  from o1jax.thinking.loop import _think
  hf.think_on_hf((params, config, tok), PROMPTS[:2], [40, 30], max_answer_tokens=16)
  before = _think._cache_size()
  hf.think_on_hf((params, config, tok), PROMPTS[1:3], [45, 20], max_answer_tokens=16)
  assert _think._cache_size() == before


def test_several_eos_ids_from_generation_config(models, tmp_path, base_tokenizer):
  # Instruct models list several EOS ids in generation_config.json; each one ends an answer.
  d = str(tmp_path / "m")
  _copy_model(models["llama3"][0], d)
  other = base_tokenizer.token_to_id("a")
  eos = hf.load_hf(d)[2].eos_id
  with open(os.path.join(d, "generation_config.json"), "w") as f:
    json.dump({"eos_token_id": [eos, other]}, f)
  _, _, tok = hf.load_hf(d)
  assert tok.eos_ids[1:] == (other,) and tok.eos_id == tok.eos_ids[0]
  from o1jax.thinking import make_think_config
  params, config, _ = hf.load_hf(d)
  assert make_think_config(config, tok, 64).eos_ids == tok.eos_ids
  b = tok.encode("b")
  assert tok.decode(b + [other] + b) == tok.decode(b)  # decoding stops at either EOS


def test_export_reimport_bitwise_and_transformers_loads_it(models, loaded, tmp_path):
  for kind, (d, model) in models.items():
    params, config, tok = loaded[kind]
    out = str(tmp_path / kind)
    shard = 60_000 if kind == "llama3" else 5 * 2**30  # llama3: our sharded export
    hf.save_hf(params, config, out, tokenizer_dir=d, max_shard_size=shard)
    p2, c2, _ = hf.load_hf(out)
    assert c2 == config
    _assert_bitwise(params, p2)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).float().eval()
    seqs = [tok.encode_prompt(p) for p in PROMPTS]
    ref = _hf_logits(model, seqs)
    assert _max_diff(_hf_logits(theirs, seqs), ref, seqs) <= 1e-6, kind
  assert os.path.isfile(os.path.join(tmp_path, "llama3", "model.safetensors.index.json"))


def test_bfloat16_load_and_roundtrip(models, tmp_path):
  d, _ = models["qwen3"]
  params, config, _ = hf.load_hf(d, dtype="bfloat16")
  assert config.param_dtype == config.dtype == "bfloat16"
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
  hf.save_hf(params, config, str(tmp_path), tokenizer_dir=d)
  assert json.load(open(tmp_path / "config.json"))["dtype"] == "bfloat16"
  p2, _, _ = hf.load_hf(str(tmp_path), dtype="bfloat16")
  _assert_bitwise(params, p2)
  mixed, cfg, _ = hf.load_hf(d, dtype="float32", param_dtype="bfloat16")
  assert cfg.dtype == "float32" and jax.tree.leaves(mixed)[0].dtype == jnp.bfloat16


def test_sharded_checkpoint_and_shardings(models, loaded, tmp_path):
  d, model = models["r1_distill"]
  model.save_pretrained(str(tmp_path), max_shard_size="40KB")
  for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(d, f), tmp_path)
  assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 3
  # conftest.py simulates 8 CPU devices: split query heads over 2 of them when we can.
  n = 2 if len(jax.devices()) >= 2 else 1
  mesh = jax.make_mesh((n,), ("x",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:n])
  P = jax.sharding.PartitionSpec
  replicated = jax.sharding.NamedSharding(mesh, P())
  by_heads = jax.sharding.NamedSharding(mesh, P(None, "x", None))

  def pick(path):
    return by_heads if path.endswith("attn/q") else replicated

  params, _, _ = hf.load_hf(str(tmp_path), shardings=pick)
  ref = loaded["r1_distill"][0]
  tree_shardings = jax.tree_util.tree_map_with_path(
      lambda kp, _: pick("/".join(k.key for k in kp)), ref)
  p2, _, _ = hf.load_hf(str(tmp_path), shardings=tree_shardings)
  _assert_bitwise(ref, params)
  _assert_bitwise(ref, p2)
  for tree in (params, p2):
    assert tree["layers_1"]["attn"]["q"].sharding == by_heads
    assert tree["lm_head"].sharding == replicated


def test_config_styles_agree():
  new = dict(model_type="llama", **DIMS, rope_parameters=dict(
      rope_type="llama3", rope_theta=5e5, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
      original_max_position_embeddings=64), dtype="bfloat16")
  old = {k: v for k, v in new.items() if k not in ("rope_parameters", "dtype")}
  old.update(rope_theta=5e5, torch_dtype="bfloat16", rope_scaling=dict(
      type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
      original_max_position_embeddings=64))
  a, b = hf.model_config_from_hf(new), hf.model_config_from_hf(old)
  assert a == b and a.rope_scaling.factor == 8.0 and a.rope_theta == 5e5


def _copy_model(src, dst):
  shutil.copytree(src, dst)
  return str(dst)


def _edit_config(d, **changes):
  path = os.path.join(d, "config.json")
  cfg = json.load(open(path))
  cfg.update(changes)
  json.dump(cfg, open(path, "w"))


@pytest.mark.parametrize("changes,error", [
    (dict(model_type="mistral"), "model_type 'mistral'"),
    (dict(use_sliding_window=True), "use_sliding_window"),
    (dict(num_experts=8), "num_experts"),
    (dict(rope_parameters=dict(rope_type="yarn", rope_theta=1e4, factor=4.0)), "rope_type 'yarn'"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(hidden_size=96), "model.embed_tokens.weight"),  # shapes no longer match the file
    (dict(tie_word_embeddings=True), "tie_word_embeddings.*lm_head.weight differs"),
])
def test_bad_config_raises(models, tmp_path, changes, error):
  d = _copy_model(models["llama3"][0], tmp_path / "m")
  _edit_config(d, **changes)
  with pytest.raises(ValueError, match=error):
    hf.load_hf(d)


def test_bad_files_raise(models, tmp_path):
  from safetensors.numpy import load_file, save_file
  src = models["qwen3"][0]
  d = _copy_model(src, tmp_path / "a")
  os.remove(os.path.join(d, "model.safetensors"))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    hf.load_hf(d)
  d = _copy_model(src, tmp_path / "b")
  os.remove(os.path.join(d, "tokenizer.json"))
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    hf.load_hf(d)
  d = _copy_model(src, tmp_path / "c")
  path = os.path.join(d, "model.safetensors")
  tensors = load_file(path)
  tensors["model.layers.0.self_attn.k_norm.weight"] = np.ones(3, np.float32)
  save_file(tensors, path, metadata={"format": "pt"})
  with pytest.raises(ValueError, match="k_norm.weight.*shape"):
    hf.load_hf(d)
  tensors["model.layers.0.self_attn.k_norm.weight"] = np.ones(32, np.int8)
  save_file(tensors, path, metadata={"format": "pt"})
  with pytest.raises(ValueError, match="k_norm.weight.*dtype I8"):
    hf.load_hf(d)
  d = _copy_model(models["r1_distill"][0], tmp_path / "d")
  json.dump({"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}},
            open(os.path.join(d, "model.safetensors.index.json"), "w"))
  with pytest.raises(FileNotFoundError, match="model-00002-of-00002"):
    hf.load_hf(d)


def test_thinking_markers_required(models, tmp_path, base_tokenizer):
  d = _copy_model(models["r1_distill"][0], tmp_path / "m")
  tok = tokenizers.Tokenizer.from_str(base_tokenizer.to_str())
  raw = json.loads(tok.to_str())
  raw["added_tokens"] = [t for t in raw["added_tokens"] if "think" not in t["content"]]
  with open(os.path.join(d, "tokenizer.json"), "w") as f:
    json.dump(raw, f, ensure_ascii=False)
  with pytest.raises(ValueError, match="<think>"):
    hf.load_hf(d)  # R1's template opens <think>: the model is a thinking model
  llama = hf.HFTokenizer(d, chat_template_source=LLAMA_TEMPLATE)
  with pytest.raises(ValueError, match="thinking loop"):
    _ = llama.think_id


CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo 你好"},
     {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHi!"},
     {"role": "user", "content": "  and again  "}],
]


@pytest.mark.parametrize("style", list(STYLES))
def test_chat_template_matches_transformers(style, base_tokenizer, tmp_path):
  _write_tokenizer(base_tokenizer, str(tmp_path), style)
  ours = hf.HFTokenizer(str(tmp_path))
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  tools = [{"type": "function", "function": {"name": "add", "description": "a <b> & c"}}]
  for conv in CONVERSATIONS:
    for gen in (True, False):
      for kw in ({}, {"tools": tools}, {"enable_thinking": False}):
        want = theirs.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False, **kw)
        assert ours.render_chat(conv, add_generation_prompt=gen, **kw) == want
        assert ours.encode(want) == theirs.encode(want, add_special_tokens=False)
  text = ours.prompt_text(CONVERSATIONS[0][0]["content"])
  assert text.endswith("<think>\n") and text.count("<think>") == 1  # R1: not opened twice
  assert ours.encode_prompt("hi")[-2:] == ours.encode("<think>\n")
  if style == "qwen":
    with pytest.raises(Exception, match="unknown role"):
      ours.render_chat([{"role": "robot", "content": "x"}])
    off = hf.HFTokenizer(str(tmp_path), template_kwargs={"enable_thinking": False})
    with pytest.raises(ValueError, match="already closed thinking"):
      off.encode_prompt("hi")


def test_missing_dependency_names_the_extra():
  from o1jax.hf._deps import require
  with pytest.raises(ImportError, match=r"o1jax\[hf\]"):
    require("surely_not_installed_pkg.numpy")


def _sentencepiece_tokenizer():
  """Llama-2 style: "▁" for spaces, byte fallback for unseen characters, and a decoder that
  strips the leading space (so a token decoded alone loses it)."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, trainers
  tok = Tokenizer(models.BPE(byte_fallback=True))
  tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                         normalizers.Replace(" ", "▁")])
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(" ", 1, 0)])
  lines = (line.replace("你好", "").replace("🎉", "") for line in _lines())  # bytes only
  tok.train_from_iterator(lines, trainers.BpeTrainer(
      vocab_size=400, special_tokens=SPECIALS + [f"<0x{b:02X}>" for b in range(256)]))
  tok.add_tokens([AddedToken(t, special=False, normalized=False)
                  for t in ("<think>", "</think>")])
  return tok


@pytest.mark.parametrize("style", ["byte_level", "sentencepiece"])
def test_stream_decoder_matches_decode(base_tokenizer, tmp_path, style):
  base = base_tokenizer if style == "byte_level" else _sentencepiece_tokenizer()
  _write_tokenizer(base, str(tmp_path), "qwen")
  tok = hf.HFTokenizer(str(tmp_path))
  text = "héllo wörld 你好 🎉🎉 <think>\n12 + 7 = 19</think>\n\nß∑ done"
  ids = tok.encode(text)
  if style == "byte_level":
    assert tok.decode(ids) == text
  else:  # the normalizer puts a space after each added token
    assert "你好 🎉🎉" in tok.decode(ids)
  text = tok.decode(ids)
  rng = random.Random(0)
  for trial in range(5):
    stream, deltas, i = tok.stream(), [], 0
    while i < len(ids):
      k = 1 if trial == 0 else rng.randint(1, 3)
      deltas.append(stream.push(ids[i:i + k]))
      assert "\ufffd" not in deltas[-1]
      i += k
    deltas.append(stream.flush())
    assert "".join(deltas) == text == stream.text
  # A character split across tokens is held back until it is complete.
  emoji = tok.encode("🎉")
  if len(emoji) > 1:
    s = tok.stream()
    assert s.push(emoji[0]) == "" and s.push(emoji[1:]) == "🎉"
