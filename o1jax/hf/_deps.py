"""Lazy imports of the optional Hugging Face dependencies, with an error naming the extra.

o1jax itself does not depend on safetensors / tokenizers / jinja2: only this package does,
so they are imported on first use and a missing one says how to install it.
"""

from __future__ import annotations

import importlib

_PIP_NAMES = {"safetensors": "safetensors", "tokenizers": "tokenizers", "jinja2": "jinja2"}


def require(module: str):
  """Imports `module` (e.g. "safetensors.numpy"), or raises ImportError naming o1jax[hf]."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    top = module.split(".")[0]
    raise ImportError(
        f"o1jax.hf needs the '{_PIP_NAMES.get(top, top)}' package to read Hugging Face "
        "checkpoints; install the extra with: pip install 'o1jax[hf]'") from e
