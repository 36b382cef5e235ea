"""Checkpoints of train states, one folder per run, one step per saved point.

The only module that imports orbax. A run's checkpoints are indexed by an integer
"step", which for pretraining is the D_p token count the checkpoint was taken at,
so finetunes can ask for "the checkpoint at D_p" directly. A checkpoint holds named
items (e.g. "model" and "optimizer"), so a finetune restores the model alone.

`Writer` saves in the background (a training run's save points and its periodic
checkpoints); `save` is the synchronous form for a stage's single result. A restore
first compares the saved shapes with the model's, so a checkpoint of another model
shape is named as such (ValueError); one whose files are missing or damaged raises
`Unreadable`, and `set_aside` moves it out of the way without deleting it.

A single-process run also keeps a host copy of the small checkpoints it saved last
(`_Recent`), so that a finetune starting from a save point it has just written, or an
evaluation of a finetune it has just trained, skips orbax's read (`from_memory`).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from scaling import timing

META = "meta"
# Restoring failed for a reason of the machine, not of the files: never "unreadable".
_MACHINE_ERRORS = (MemoryError, jax.errors.JaxRuntimeError)
_SHOWN_MISMATCHES = 5
# What `_Recent` holds at most: the small models of a CPU study, not a pod's.
_RECENT_BYTES = 64 * 2**20


class Unreadable(Exception):
  """A checkpoint whose files are missing or damaged (a partial copy, a truncated or
  deleted array file, a missing item)."""


def _manager(directory: epath.PathLike, *, create: bool, background: bool = False,
             keep: int | None = None) -> ocp.CheckpointManager:
  """A writer (`create`) clears the temporary folders of saves that never completed;
  a reader must not: they may be another process's saves under way (`status`)."""
  options = ocp.CheckpointManagerOptions(
      create=create, read_only=not create, save_interval_steps=int(create),
      enable_async_checkpointing=background, max_to_keep=keep, cleanup_tmp_directories=create)
  return _Manager(_absolute(directory), options=options)


class _Manager(ocp.CheckpointManager):
  """Leaves JAX's preemption sync point to the training loop (scaling.preemption),
  which asks it once per step with the step count. orbax would also ask it with its
  own step numbers, the D_p token counts among them, and a sync point computed from
  those would never be reached."""

  def reached_preemption(self, step: int) -> bool:
    del step
    return False


def _absolute(directory: epath.PathLike) -> epath.Path:
  """orbax needs absolute paths; remote paths (gs://...) already are."""
  path = epath.Path(directory)
  return path if "://" in str(directory) else path.resolve()


def _save_args(items: dict[str, Any], meta: dict) -> ocp.args.Composite:
  if META in items:
    raise ValueError(f"item name {META!r} is reserved for the metadata")
  args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
  args[META] = ocp.args.JsonSave(meta)
  return ocp.args.Composite(**args)


def save(directory: epath.PathLike, step: int, items: dict[str, Any], meta: dict) -> None:
  """Saves pytrees `items` and JSON `meta` as `step`; a step appears only once complete."""
  with timing.phase("checkpoints"), _manager(directory, create=True) as manager:
    manager.save(int(step), args=_save_args(items, meta))
    manager.wait_until_finished()
  _recent.keep(directory, step, items, meta)


class Writer:
  """Saves checkpoints into one folder in the background: `save` returns once the
  arrays are copied off the devices, and the files are written while training goes
  on. `wait` (or leaving the `with` block) returns once every save is complete; a
  step appears in `steps` only then. With `keep`, older steps are deleted. With
  `remember`, each save is also kept for `restore(..., from_memory=True)`."""

  def __init__(self, directory: epath.PathLike, *, keep: int | None = None,
               remember: bool = True):
    self._manager = _manager(directory, create=True, background=True, keep=keep)
    self._last: int | None = None
    self._remember = remember

  def save(self, step: int, items: dict[str, Any], meta: dict) -> bool:
    """Starts saving `step`; False (and nothing saved) if it was saved already."""
    if step == self._last or step in self._manager.all_steps():
      return False
    with timing.phase("checkpoints"):  # the copy off the devices; the writing is not waited on
      self._manager.save(int(step), args=_save_args(items, meta), force=True)
    if self._remember:
      _recent.keep(self._manager.directory, step, items, meta)
    self._last = step
    return True

  def wait(self) -> None:
    with timing.phase("checkpoints"):
      self._manager.wait_until_finished()

  def close(self) -> None:
    with timing.phase("checkpoints"):
      self._manager.close()  # waits for the saves under way

  def __enter__(self) -> "Writer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


@dataclasses.dataclass
class Every:
  """When periodic checkpoints are due: every `steps` updates and every `minutes` of
  training since the last one (0 turns either off)."""
  steps: int = 0
  minutes: float = 0.0
  # A multi-host run agrees on the clock (process 0's) this often, in steps: an
  # agreement is a collective that waits for the devices.
  agree_every: int = 20
  _since: float = dataclasses.field(default_factory=time.monotonic)

  def due(self, step: int) -> bool:
    return (self.steps > 0 and step % self.steps == 0) or self._clock_due(step)

  def saved(self) -> None:
    self._since = time.monotonic()

  def _clock_due(self, step: int) -> bool:
    if self.minutes <= 0:
      return False
    late = time.monotonic() - self._since >= 60.0 * self.minutes
    if jax.process_count() == 1:
      return late
    if step % self.agree_every:
      return False
    from scaling import mesh as mesh_lib  # every host must take the same decision
    return mesh_lib.agreed(late)


def steps(directory: epath.PathLike) -> list[int]:
  """The steps fully saved under `directory` (empty if there is none)."""
  # A listing, not a CheckpointManager: a manager synchronises all processes, and
  # hosts may see a folder appear at different moments.
  return sorted(ocp.path.step.checkpoint_steps(_absolute(directory)))


def restore(directory: epath.PathLike, step: int, abstract_items: dict[str, Any], *,
            from_memory: bool = False) -> tuple[dict[str, Any], dict]:
  """Restores the named items at `step` and the metadata.

  `abstract_items` gives each wanted item's shapes, dtypes and shardings (pytrees
  of jax.ShapeDtypeStruct or arrays); items not named are not read. Raises
  ValueError naming every parameter whose saved shape differs from the wanted one,
  and Unreadable if the checkpoint's files are missing or damaged. With
  `from_memory`, a checkpoint this process saved (and that is still saved) is
  taken from its host copy, the same values without reading the files.
  """
  available = steps(directory)
  if int(step) not in available:
    raise FileNotFoundError(
        f"no checkpoint at step {step} in {directory} (saved: {available})")
  if from_memory and (kept := _recent.get(directory, step, abstract_items)) is not None:
    return kept
  where = _absolute(directory) / str(int(step))
  for name, tree in abstract_items.items():
    _check_shapes(where, name, tree)
  args = {name: ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, tree))
          for name, tree in abstract_items.items()}
  args[META] = ocp.args.JsonRestore()
  try:
    with timing.phase("checkpoints"), _manager(directory, create=False) as manager:
      restored = manager.restore(int(step), args=ocp.args.Composite(**args))
  except _MACHINE_ERRORS:
    raise
  except Exception as e:  # orbax and tensorstore raise many types for bad files
    raise Unreadable(f"checkpoint {where} cannot be read: {type(e).__name__}: "
                     f"{_first_line(e)}") from e
  items = {name: restored[name] for name in abstract_items}
  return items, dict(restored[META])


def read_meta(directory: epath.PathLike, step: int) -> dict:
  """The metadata saved with `step`, without reading any array."""
  try:  # the JSON file orbax wrote; through orbax (and its errors) when it cannot be read
    return json.loads((_absolute(directory) / str(int(step)) / META / "metadata").read_text())
  except (OSError, ValueError):
    return restore(directory, step, {})[1]


class _Recent:
  """Host copies of the last checkpoints this process saved, up to `_RECENT_BYTES` in
  all (the oldest dropped first), by folder and step. Only single-process runs keep
  them: a multi-host array is not whole on any one host."""

  def __init__(self):
    self._kept: collections.OrderedDict[tuple[str, int], tuple[dict, dict]] = (
        collections.OrderedDict())

  def keep(self, directory: epath.PathLike, step: int, items: dict, meta: dict) -> None:
    if jax.process_count() > 1 or _nbytes(items) > _RECENT_BYTES:
      return
    key = (str(_absolute(directory)), int(step))
    self._kept[key] = (jax.device_get(items), dict(meta))
    self._kept.move_to_end(key)
    while sum(_nbytes(kept) for kept, _ in self._kept.values()) > _RECENT_BYTES:
      self._kept.popitem(last=False)

  def get(self, directory: epath.PathLike, step: int, abstract_items: dict):
    """(items placed as `abstract_items` asks, meta), or None when not kept or of
    other shapes (then the files are read, and a mismatch named)."""
    kept = self._kept.get((str(_absolute(directory)), int(step)))
    if kept is None or not set(abstract_items) <= set(kept[0]):
      return None
    items = {name: kept[0][name] for name in abstract_items}
    if any(_leaf_specs(items[name]) != _leaf_specs(abstract_items[name]) for name in items):
      return None
    placed = {name: jax.tree.map(lambda value, want: jax.device_put(value, want.sharding),
                                 items[name], abstract_items[name])
              for name in items}
    return placed, dict(kept[1])

  def forget(self, directory: epath.PathLike, step: int | None = None) -> None:
    folder = str(_absolute(directory))
    for key in [k for k in self._kept if k[0] == folder and step in (None, k[1])]:
      del self._kept[key]


def _nbytes(tree) -> int:
  return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


def _leaf_specs(tree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in leaves}


_recent = _Recent()


def set_aside(directory: epath.PathLike, step: int) -> epath.Path:
  """Renames an unreadable checkpoint `<step>` to `<step>.unreadable` (kept for a
  look, invisible to `steps`, so the step counts as missing) and returns the path."""
  folder = _absolute(directory)
  _recent.forget(folder, step)
  target = folder / f"{int(step)}.unreadable"
  if jax.process_index() == 0:
    if target.exists():
      target.rmtree()  # an older unreadable copy of the same step
    (folder / str(int(step))).rename(target)
  _all_processes_reach(f"set_aside {folder} {step}")
  return target


def delete(directory: epath.PathLike, step: int) -> None:
  _recent.forget(directory, step)
  with _manager(directory, create=True) as manager:
    manager.delete(int(step))


def delete_all(directory: epath.PathLike) -> None:
  """Removes a folder of checkpoints no longer needed."""
  folder = _absolute(directory)
  _recent.forget(folder)
  if jax.process_index() == 0 and folder.exists():
    folder.rmtree()
  _all_processes_reach(f"delete_all {folder}")


def _all_processes_reach(name: str) -> None:
  """A barrier: no host reads a folder another is still changing."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _check_shapes(where: epath.Path, item: str, abstract_tree: Any) -> None:
  """Compares the saved shapes of `item` with `abstract_tree`'s, path by path."""
  try:
    saved = _leaf_shapes(ocp.StandardCheckpointHandler().metadata(where / item).tree)
  except _MACHINE_ERRORS:
    raise
  except Exception as e:
    raise Unreadable(f"checkpoint {where}: item {item!r} has no readable metadata: "
                     f"{type(e).__name__}: {_first_line(e)}") from e
  wanted = _leaf_shapes(abstract_tree)
  problems = [f"{path}: saved {saved[path]} vs expected {wanted[path]}"
              for path in wanted if path in saved and saved[path] != wanted[path]]
  problems += [f"{path}: expected {wanted[path]}, not in the checkpoint"
               for path in wanted if path not in saved]
  problems += [f"{path}: saved {saved[path]}, not in this model"
               for path in saved if path not in wanted]
  if problems:
    shown = "; ".join(problems[:_SHOWN_MISMATCHES])
    more = f" (and {len(problems) - _SHOWN_MISMATCHES} more)" if len(problems) > _SHOWN_MISMATCHES else ""
    raise ValueError(f"checkpoint {where} was saved from a different model shape: item "
                     f"{item!r}: {shown}{more}")


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'params/encoder_layers/0/mlp/wi/value' -> shape, for saved and live trees alike
  (orbax saves dataclass fields and list indices as dict keys)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}


def _key_name(key) -> str:
  for field in ("key", "name", "idx"):
    if hasattr(key, field):
      return str(getattr(key, field))
  return str(key)


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0][:300] if text else ""
