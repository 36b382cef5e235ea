"""Device mesh and the ONE table mapping logical axis names onto mesh axes.

Models name logical axes only ('batch', 'embed', 'mlp', ...). This module decides
where they land on a mesh with axes ('data', 'fsdp', 'tensor'):

* data parallel: the batch is split over 'data'; parameters are replicated on it.
* FSDP: the batch is also split over 'fsdp', and parameters are split over it on
  their 'embed' dimension (gathered by XLA for each matmul).
* tensor parallel: 'heads', 'mlp' and 'vocab' dimensions are split over 'tensor'.
Any combination works, e.g. MeshConfig(data=2, fsdp=2, tensor=2).

Sharding mode: the mesh uses ``AxisType.Auto`` on every axis, on purpose. The model
code is plain ``einsum``s with sharding constraints at block boundaries; in Auto mode
GSPMD propagates shardings through the matmuls and inserts the collectives. In
Explicit mode (``jax.make_mesh``'s default) every matmul whose contracting dimension
is sharded -- the core of tensor parallelism -- raises unless the model passes an
``out_sharding``, which would put mesh knowledge into every layer.

Usage::

    mesh = make_mesh(MeshConfig(data=-1, fsdp=2))
    validate(cfg, size, jax.device_count())  # before any compilation
    graphdef, state, state_shardings = sharded_init(
        lambda: build_model(size, rngs=nnx.Rngs(0)), mesh)
    with activate(mesh):
      ... jax.jit(step, in_shardings=(state_shardings, batch_sharding(mesh)),
                  out_shardings=(..., state_shardings), donate_argnums=...)
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable, Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from models import layers
from models.sizes import ModelSize

MESH_AXES = ("data", "fsdp", "tensor")

# The single logical -> mesh axis rules table. Activations reuse parameter names;
# a mesh axis already used earlier in an activation's spec is dropped there
# (models.layers.logical_to_spec), so [batch, length, embed] is split on batch only.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("relpos_buckets", None),
    ("norm", None),
)

# Which ModelSize field gives the length of each sharded logical axis (for validate).
_LOGICAL_AXIS_FIELDS = {
    "vocab": "vocab_size",
    "embed": "d_model",
    "mlp": "d_ff",
    "heads": "num_heads",
    "kv": "head_dim",
    "relpos_buckets": "relative_attention_num_buckets",
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh axis sizes; one of them may be -1: all the devices the others leave."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def resolve(self, n_devices: int) -> dict[str, int]:
    """Concrete axis sizes for ``n_devices``; ValueError naming the fields if the
    sizes are invalid or do not multiply to the device count."""
    sizes = {axis: getattr(self, axis) for axis in MESH_AXES}
    for axis, value in sizes.items():
      if not isinstance(value, int) or (value <= 0 and value != -1):
        raise ValueError(f"MeshConfig.{axis}={value!r} must be a positive int or -1")
    fill = [axis for axis, value in sizes.items() if value == -1]
    if len(fill) > 1:
      raise ValueError(f"MeshConfig: only one axis may be -1, got {', '.join(fill)}")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if fill:
      if n_devices % fixed:
        raise ValueError(
            f"MeshConfig.{fill[0]}=-1: the other axes multiply to {fixed}, which does not "
            f"divide the {n_devices} devices")
      sizes[fill[0]] = n_devices // fixed
    elif fixed != n_devices:
      raise ValueError(
          f"MeshConfig(data={self.data}, fsdp={self.fsdp}, tensor={self.tensor}) "
          f"multiplies to {fixed}, but there are {n_devices} devices")
    return sizes


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp', 'tensor') mesh in Auto mode over ``devices`` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = tuple(cfg.resolve(len(devices))[axis] for axis in MESH_AXES)
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh) -> Iterator[jax.sharding.Mesh]:
  """Sets ``mesh`` as the current mesh and LOGICAL_AXIS_RULES as the active rules, so
  models created, abstractly evaluated or traced inside land on the mesh."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
    yield mesh


def logical_spec(names: Sequence[str | None]) -> PartitionSpec:
  """PartitionSpec of an array with these logical axis names, under the rules."""
  with nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
    return layers.logical_to_spec(names)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Sharding of input batches: leading (batch) dimension split, the rest replicated."""
  return NamedSharding(mesh, logical_spec(("batch",)))


def state_shardings(state, mesh: jax.sharding.Mesh):
  """NamedShardings of an NNX state (concrete or abstract) under the rules table."""
  with nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
    return nnx.get_named_sharding(state, mesh)


def sharded_init(create_model: Callable[[], nnx.Module], mesh: jax.sharding.Mesh):
  """Initialises a model directly into its sharded layout, in one compiled call.

  Returns (graphdef, state, state_shardings). Creating a model eagerly under a mesh
  also works but dispatches (and compiles) every initialiser and placement
  separately, which is slow; here the initialisers run inside one ``jax.jit``
  whose ``out_shardings`` come from the rules, so no device ever holds a full copy.
  """
  with activate(mesh):
    abstract = nnx.eval_shape(create_model)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = nnx.get_named_sharding(abstract_state, mesh)
    state = jax.jit(lambda: nnx.split(create_model())[1], out_shardings=shardings)()
  return graphdef, state, shardings


def _mesh_axes_of(logical_name: str) -> tuple[str, ...]:
  target = dict(LOGICAL_AXIS_RULES)[logical_name]
  return (target,) if isinstance(target, str) else tuple(target or ())


def validate(cfg: MeshConfig, size: ModelSize, n_devices: int, *,
             batch_size: int | None = None) -> dict[str, int]:
  """Checks, before any compilation, that ``cfg`` fits ``n_devices`` and that every
  sharded dimension of ``size`` (and ``batch_size`` if given) divides evenly.

  Returns the resolved axis sizes; raises ValueError naming the fields and numbers.
  """
  axis_sizes = cfg.resolve(n_devices)
  dims = {name: (f"ModelSize.{field}", getattr(size, field))
          for name, field in _LOGICAL_AXIS_FIELDS.items()}
  if batch_size is not None:
    dims["batch"] = ("batch_size", batch_size)
  for logical_name, (field, length) in dims.items():
    mesh_axes = _mesh_axes_of(logical_name)
    shards = math.prod(axis_sizes[a] for a in mesh_axes)
    if length % shards:
      named = " x ".join(f"MeshConfig.{a}={axis_sizes[a]}" for a in mesh_axes)
      raise ValueError(
          f"{named} does not divide {field}={length} of size {size.name!r} "
          f"(logical axis {logical_name!r} is split {shards} ways)")
  return axis_sizes


def describe(mesh: jax.sharding.Mesh) -> str:
  """'data=4 fsdp=2 tensor=1' for logs."""
  return " ".join(f"{name}={n}" for name, n in zip(mesh.axis_names, np.shape(mesh.devices)))


# -------------------------------------------------------------------- multi-host

# The launchers whose environment JAX itself reads to join the processes of one job:
# SLURM (srun), Open MPI (mpirun) and multi-host Cloud TPU VMs (GCE and GKE). Others
# (Kubernetes in general) take the explicit flags.
_AUTO_DETECTED_CLUSTERS = ("SlurmCluster", "OmpiCluster", "GceTpuCluster", "GkeTpuCluster")


class DistributedError(RuntimeError):
  """The processes of a multi-host run could not join each other."""


def detected_cluster() -> str | None:
  """The name of the cluster environment JAX detects here, if any."""
  from jax._src import clusters  # JAX's own detection, also used by initialize()
  for cluster in clusters.ClusterEnv._cluster_types:
    if cluster.__name__ in _AUTO_DETECTED_CLUSTERS and cluster.is_env_present():
      return cluster.__name__
  return None


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           timeout_s: int = 300) -> bool:
  """Joins the processes of a multi-host run before any device is touched.

  With explicit arguments (all three), or else when JAX detects a SLURM, MPI or
  multi-host TPU environment; otherwise this is a single-process run and nothing
  happens. Returns whether jax.distributed was initialised.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    raise DistributedError("--coordinator_address, --num_processes and --process_id go "
                           "together: give all three, or none for JAX's cluster detection")
  cluster = detected_cluster()
  if coordinator_address is None and cluster is None:
    return False
  # CPU processes exchange collectives over gloo (the default CPU client has none);
  # accelerators use their own collectives, whatever this says.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  where = coordinator_address or f"the coordinator {cluster} names"
  if coordinator_address is not None and process_id != 0:
    _wait_for_coordinator(coordinator_address, timeout_s)
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=int(timeout_s))
  except Exception as e:  # jax raises several types, all meaning "could not join"
    raise DistributedError(f"could not join {where} within {timeout_s} s: "
                           f"{type(e).__name__}: {e}") from e
  return True


def _wait_for_coordinator(address: str, timeout_s: int) -> None:
  """Waits until the coordinator's port answers. JAX's client aborts the process when
  it cannot connect, so an unreachable address is caught here, with its name."""
  import socket
  import time
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise DistributedError(f"--coordinator_address={address!r} is not HOST:PORT")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=1.0):
        return
    except OSError as e:
      if time.monotonic() > deadline:
        raise DistributedError(f"could not join {address} within {timeout_s} s: nothing "
                               f"answers there ({e})") from e
      time.sleep(0.5)


def is_primary() -> bool:
  """Whether this process writes the study's shared outputs (rows, tables, plots)."""
  return jax.process_index() == 0


def agreed(value: bool) -> bool:
  """Process 0's answer, on every process, so all take the same branch (a stage
  skipped on one host and run on another would deadlock in its collectives)."""
  if jax.process_count() == 1:
    return bool(value)
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(value)))


def local_row_blocks(sharding: NamedSharding, rows: int, blocks: int) -> list[int]:
  """Which of `blocks` equal row blocks of a [rows, ...] batch live on this process's
  devices under `sharding`: the input shards this process reads."""
  per_block = rows // blocks
  local = set()
  for index in sharding.addressable_devices_indices_map((rows,)).values():
    start, stop, _ = index[0].indices(rows)
    local.update(range(start // per_block, -(-stop // per_block)))
  return sorted(local)
