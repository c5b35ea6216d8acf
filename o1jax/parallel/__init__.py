"""Meshes, the logical-axis rule table, sharded init/steps/inference and multi-host start-up.

`rules.py` holds the one table that maps the model's logical axes to the mesh axes
(`data`, `fsdp`, `tensor`); nothing else in the codebase names mesh axes.
"""

from o1jax.parallel.distributed import detected_cluster, initialize, is_primary
from o1jax.parallel.mesh import (make_mesh, mesh_from_config, mesh_shape_from_config,
                                 parse_shape, resolve_shape)
from o1jax.parallel.rules import (DEFAULT_MESH_SHAPE, LOGICAL_AXIS_RULES, MESH_AXES, activate,
                                  batch_sharding, check_batch, check_model_fits,
                                  logical_sharding, replicated, rules_for, shards_of)
from o1jax.parallel.sharding import (abstract_with, global_batch, init_params_sharded,
                                     init_sharded, opt_state_shardings, param_shardings,
                                     process_data_shard, put, put_batch, shard_params, to_host)
