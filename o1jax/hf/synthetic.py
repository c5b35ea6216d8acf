"""A random Qwen2 checkpoint with a small byte-level BPE and a ChatML template, written in
the Hugging Face layout: what the benchmarks load when no model hub is reachable.

Benchmarks time the loading, prefill and decode paths (`o1jax.hf.load_hf`), which do not
depend on trained weights; the tokenizer has the chat and thinking markers those paths
need. Needs torch, transformers and tokenizers (the `hf` extra).
"""

from __future__ import annotations

import json
import os

import numpy as np

CHATML_TEMPLATE = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\\n'}}{% endif %}")


def bpe_tokenizer(vocab_size: int = 400):
  """A byte-level BPE trained on arithmetic sentences, with `<think>`/`</think>` added."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  rng = np.random.default_rng(0)
  lines = [f"{a} + {b} = {a + b}, so the answer is {a + b}." for a, b in
           rng.integers(0, 1000, (2000, 2))]
  tok.train_from_iterator(lines, trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.add_tokens([AddedToken(t, normalized=False) for t in ("<think>", "</think>")])
  return tok


def write_qwen2(out_dir: str, *, hidden_size: int, intermediate_size: int,
                num_hidden_layers: int, num_attention_heads: int, num_key_value_heads: int,
                vocab_size: int, max_position_embeddings: int, seed: int = 0) -> str:
  """Writes a randomly initialised float32 Qwen2ForCausalLM (tied embeddings) with the BPE
  above and a ChatML template into `out_dir`; returns `out_dir`."""
  import torch
  import transformers
  tok = bpe_tokenizer()
  if tok.get_vocab_size() > vocab_size:
    raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's "
                     f"{tok.get_vocab_size()} tokens")
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
               "pad_token": "<|endoftext|>", "chat_template": CHATML_TEMPLATE}, f)
  torch.manual_seed(seed)
  config = transformers.Qwen2Config(
      hidden_size=hidden_size, intermediate_size=intermediate_size,
      num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
      num_key_value_heads=num_key_value_heads, vocab_size=vocab_size,
      max_position_embeddings=max_position_embeddings, tie_word_embeddings=True)
  transformers.Qwen2ForCausalLM(config).float().save_pretrained(out_dir)
  return out_dir
