"""Session set-up shared by every test file.

Eight simulated CPU devices, so the sharding tests (test_parallel.py) run on one machine. This
must happen before anything creates a JAX backend, hence here. Tests that build no mesh are
unaffected: their arrays and jitted functions still live on device 0.
"""

import threading

import jax

jax.config.update("jax_num_cpu_devices", 8)
# Servers under test compile in their own threads (uvicorn, the warm-up executor): give
# threads the main thread's headroom for LLVM's recursion on large programs.
threading.stack_size(64 * 1024 * 1024)

from absl import flags  # noqa: E402

# Code that reads absl flags (grain's multi-worker loaders) refuses to run before flags are
# parsed; pytest never parses them.
flags.FLAGS.mark_as_parsed()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def model():
  """The embedded tiny reasoner: (params, model config). Test files may define their own."""
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
  params, config, _ = load_params(embedded_checkpoint_dir())
  return params, config


import gc  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops every cached jitted program after each test module. A whole-suite run compiles
  thousands of XLA:CPU executables in one process; kept alive, their code mappings pile up
  until a late compile in the serving tests crashed in LLVM (segfault, twice at the same
  test, never when that file ran alone). Modules recompile what they use."""
  yield
  jax.clear_caches()
  gc.collect()
