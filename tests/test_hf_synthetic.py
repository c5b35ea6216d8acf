"""The benchmarks' synthetic Qwen2 checkpoint (o1jax/hf/synthetic.py) loads through load_hf
with the sizes asked for, and its logits match the Hugging Face model it was written from."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


def test_written_checkpoint_loads_and_matches_hugging_face(tmp_path):
  from o1jax.hf import load_hf, synthetic
  from o1jax.model import forward
  sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=416, max_position_embeddings=128)
  synthetic.write_qwen2(str(tmp_path), **sizes)
  params, config, tok = load_hf(str(tmp_path))
  assert (config.num_layers, config.vocab_size) == (2, 416)
  ids = tok.encode("<think> 12 + 30 = 42 </think>")
  assert tok.decode(ids).strip() == "<think> 12 + 30 = 42 </think>"
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).float().eval()
  with torch.no_grad():
    want = hf(torch.tensor([ids])).logits[0].numpy()
  positions = np.arange(len(ids), dtype=np.int32)[None]
  got, _, _ = forward(params, np.asarray([ids], np.int32), positions, None, config=config)
  got = np.asarray(got)[0]
  np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4)
  with pytest.raises(ValueError, match="vocab_size"):
    synthetic.write_qwen2(str(tmp_path / "small"), **{**sizes, "vocab_size": 100})
