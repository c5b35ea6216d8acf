"""Config files that build on a sibling config file (configs/reasoner.py on configs/tiny.py).

ml_collections loads a config file by path, so configs/ is not a package and a config
cannot `import tiny`; it loads its sibling the same way, by path, through this function.
"""

from __future__ import annotations

import importlib.util
import os


def sibling_config(config_file: str, name: str, *args):
  """`get_config(*args)` of the config file `name` in the folder of `config_file` (pass
  `__file__`)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
  if not os.path.isfile(path):
    raise ValueError(f"{config_file} builds on {name}, which is not at {path}")
  spec = importlib.util.spec_from_file_location(f"o1jax_config_{name[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)
