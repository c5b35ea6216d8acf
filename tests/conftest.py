"""Session set-up shared by every test file.

Eight simulated CPU devices, so the sharding tests (test_parallel.py) run on one machine. This
must happen before anything creates a JAX backend, hence here. Tests that build no mesh are
unaffected: their arrays and jitted functions still live on device 0.
"""

import jax

jax.config.update("jax_num_cpu_devices", 8)

from absl import flags  # noqa: E402

# Code that reads absl flags (grain's multi-worker loaders) refuses to run before flags are
# parsed; pytest never parses them.
flags.FLAGS.mark_as_parsed()
