"""The schema of a study config, and its validation before any compute.

A study config is an `ml_collections.ConfigDict` made by a `configs/*.py` file's
`get_config()`. It starts from `base_config()` and overrides fields; `validate`
rejects any field the base does not know, any grid axis outside `GRID_AXES`, and
values that cannot work, naming the field at fault.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

# Grid axes. Empty means absent; `size` and `D_p` are always needed.
#   size            preset names (models/sizes.py) or names defined in config.sizes
#   mixture         names in config.mixtures (the training data)
#   p               Fernandes et al.'s weight of grid.pair[0] against grid.pair[1]
#   D_p             token budgets of the first training run (checkpoints, or WSD branches)
#   pair            translation pairs: finetuned on (with D_f) and evaluated
#   D_f             finetuning tokens; 0 (or absent) = evaluate the trained model directly
#   encoder_layers, decoder_layers, d_model   model shape fields, overriding the size's
GRID_AXES = ("size", "mixture", "p", "D_p", "pair", "D_f",
             "encoder_layers", "decoder_layers", "d_model")
SHAPE_AXES = {"encoder_layers": "num_encoder_layers", "decoder_layers": "num_decoder_layers",
              "d_model": "d_model"}
OBJECTIVES = ("span_corruption", "translation", "causal_lm")
DECODE_METHODS = ("greedy",)
# Config maps whose keys are the user's own names (checked where they are used).
FREE_FORM = ("mixtures.", "sizes.", "fits.curves.", "data.world.", "data.pretrain_sources.",
             "data.translation_sources.")


class ConfigError(ValueError):
  """A study config that cannot run; the message names the field at fault."""


def _training_section(**overrides) -> dict:
  section = dict(
      batch_size=32, input_length=64, target_length=32,
      optimizer="adamw", learning_rate=1e-3, warmup_steps=100,
      schedule="rsqrt",         # 'rsqrt' (T5) | 'constant' | 'cosine' | 'wsd'
      cooldown_fraction=0.2,    # wsd: the share of a budget spent cooling down
      cooldown_shape="linear",  # wsd: 'linear' | '1-sqrt'
      final_lr_fraction=0.0,    # cosine: the end as a fraction of the peak
      weight_decay=0.0, log_every=100,
      # Pack several examples into each row (seqio's packing feature converters): fewer
      # padding tokens per step. Decoder-only translation (prefix LM) reads one per row.
      pack=False)
  section.update(overrides)
  return section


def study_variant(study: str, variant: str,
                  variants: dict) -> tuple[ml_collections.ConfigDict, Any]:
  """A study config's start: base_config named '<study>_<variant>', and the function that
  sets the variant's fields; ValueError for a variant the study does not have."""
  if variant not in variants:
    raise ValueError(f"unknown variant {variant!r} (known: {', '.join(variants)})")
  cfg = base_config()
  cfg.name = f"{study}_{variant}"
  return cfg, variants[variant]


def base_config() -> ml_collections.ConfigDict:
  """Every field a study config may set, with its default."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "study"
  cfg.seed = 0
  cfg.data = dict(
      source="synthetic",       # 'synthetic' | 'tfds' | 'files'
      # synthetic: the embedded world, with a SentencePiece vocabulary trained on it
      world=dict(),             # WorldConfig overrides
      vocab_size=1000,          # SentencePiece pieces (before 100 sentinel ids)
      pretrain_domains=(),      # domains pretraining mixes draw from (empty = all)
      finetune_domain="",       # domain of the parallel finetuning data ('' = first)
      # tfds / files: a SentencePiece model and named sources
      vocabulary="",            # path of a SentencePiece .model (e.g. mT5's)
      pretrain_sources={},      # language -> TFDS name | {name, splits, text_key} | {split: file pattern}
      translation_sources={},   # 'src-tgt' -> TFDS name | {name, splits} | {split: TSV file pattern}
      tfds_data_dir="",
      # The global training batch is read as this many disjoint shards (seqio
      # ShardInfo), each process reading those on its devices; 0 = one per process.
      # Fix it to compare runs over different process counts: it sets the data order.
      input_shards=0,
  )
  cfg.mixtures = {}             # name -> {language or 'src-tgt' pair: rate}
  cfg.sizes = {}                # name -> {base: preset name (optional), ModelSize fields}
  cfg.model = dict(
      dtype="float32",          # activation / compute dtype
      param_dtype="float32",
      dropout_rate=0.0,
      remat="none",             # rematerialisation policy (memory, not results)
  )
  cfg.mesh = dict(data=-1, fsdp=1, tensor=1)
  # The first training run of every model: span corruption (T5), translation from
  # scratch (Ghorbani, Fernandes) or a causal LM (decoder-only sizes).
  cfg.pretrain = _training_section(
      objective="span_corruption",
      # Periodic checkpoints, beside the D_p ones, so a preempted or killed run loses
      # little (0 = off; both may be set). They change no result.
      checkpoint_every_steps=0, checkpoint_every_minutes=30.0)
  # Translation finetuning from the checkpoint at each D_p (prefix LM for decoder-only).
  # `together`: up to this many finetunes of one model shape, pair and D_f whose weights
  # are ready train together as one vmapped program (the local executor; Ray runs each
  # finetune as its own task, as soon as its checkpoint is saved).
  cfg.finetune = _training_section(input_length=48, target_length=48, steps=300,
                                   warmup_steps=0, schedule="constant", together=1)
  cfg.eval = dict(split="test", max_examples=500, batch_size=100, max_decode_length=48,
                  decode="greedy",
                  lm_split="validation",  # held-out split for LM loss
                  lm_max_batches=8)        # batches per mixture component
  cfg.grid = {axis: () for axis in GRID_AXES}
  cfg.fits = dict(bootstrap=200, curves=isik_curves())
  cfg.report = dict(plots=("curves",))
  # What each stage asks of a Ray cluster (`run --executor ray`; the local executor
  # ignores it): CPUs, GPUs, memory in bytes (0 = unset) and custom resources such as
  # {"TPU": 4}. A worker killed mid-stage is retried `max_retries` times.
  cfg.resources = {kind: _stage_resources() for kind in STAGE_KINDS}
  cfg.resources.max_retries = 3
  return cfg


STAGE_KINDS = ("train", "cooldown", "finetune", "evaluate")
_RAY_OWN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def _stage_resources() -> dict:
  return dict(num_cpus=1.0, num_gpus=0.0, memory=0, resources={})  # floats: a share of a GPU


def curve(law: str, inputs: Sequence[str], target: str, *, group_by: Sequence[str] = (),
          holdout: str = "none", delta: float = 1e-3, where: str = "",
          bootstrap_groups: str = "") -> dict:
  """One family of fits: `law` (fits.laws) of the `inputs` columns against `target`,
  one fit per `group_by` group, rows filtered by the pandas query `where`."""
  return dict(law=law, inputs=tuple(inputs), target=target, group_by=tuple(group_by),
              holdout=holdout, delta=delta, where=where, bootstrap_groups=bootstrap_groups)


CURVE_FIELDS = tuple(curve("power_law", ("D_p",), "ce"))


def isik_curves() -> dict:
  """Isik et al.'s two laws per (size, mixture, pair, D_f) curve, fitted on the 4
  smallest D_p: BLEU's log-law and downstream cross-entropy's power law."""
  group = ("size", "mixture", "pair", "D_f")
  return {"bleu": curve("log_law", ("D_p",), "bleu", group_by=group, holdout="smallest:4",
                        delta=0.1),
          "ce": curve("power_law", ("D_p",), "ce", group_by=group, holdout="smallest:4",
                      delta=1e-3)}


def load(spec: str) -> ml_collections.ConfigDict:
  """Imports a config file and returns its validated `get_config()`.

  `spec` is a path, or 'path:variant' (the ml_collections way), in which case the
  file's `get_config(variant)` is called, e.g. 'configs/ghorbani2021.py:cpu'.
  """
  path, _, variant = spec.partition(".py:")
  path = path + ".py" if variant else spec
  spec_ = importlib.util.spec_from_file_location("_study_config", path)
  if spec_ is None or spec_.loader is None:
    raise ConfigError(f"config file {path!r} cannot be imported")
  module = importlib.util.module_from_spec(spec_)
  try:
    spec_.loader.exec_module(module)
  except FileNotFoundError as e:
    raise ConfigError(f"config file {path!r} not found") from e
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} has no get_config()")
  try:
    cfg = module.get_config(variant) if variant else module.get_config()
  except (KeyError, ValueError, TypeError) as e:
    raise ConfigError(f"config {spec!r}: {e}") from e
  validate(cfg)
  return cfg


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field that cannot run."""
  _check_known_fields(cfg.to_dict(), base_config().to_dict(), prefix="")
  _check_curve_fields(cfg.fits.curves)
  _check_grid(cfg)
  for name, rates in cfg.mixtures.items():
    _check_rates(f"mixtures.{name}", rates)
  _check_objective(cfg)
  _check_training("pretrain", cfg.pretrain)
  _check_checkpointing(cfg.pretrain)
  if finetunes(cfg):
    _check_training("finetune", cfg.finetune)
    _check_positive("finetune.steps", [cfg.finetune.steps])
    if not isinstance(cfg.finetune.together, int) or cfg.finetune.together < 1:
      raise ConfigError(f"finetune.together must be an int >= 1 (finetunes trained "
                        f"together), got {cfg.finetune.together!r}")
  _check_eval(cfg.eval)
  _check_resources(cfg.resources)
  for name in cfg.grid.size:
    for shape in shape_variants(cfg):
      _check_packing(cfg, resolve_size(cfg, name, shape))


def finetunes(cfg: ml_collections.ConfigDict) -> bool:
  """Whether any D_f of the grid asks for a finetune."""
  return any(d_f > 0 for d_f in cfg.grid.D_f)


def input_shard_count(cfg: ml_collections.ConfigDict) -> int:
  """How many shards the global training batch is read as (data.input_shards)."""
  import jax
  return int(cfg.data.input_shards) or jax.process_count()


def translation_section(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The section whose lengths translation examples are read at: the training run's
  for translation from scratch, else the finetune's."""
  return cfg.pretrain if cfg.pretrain.objective == "translation" else cfg.finetune


def shape_variants(cfg: ml_collections.ConfigDict) -> list[dict[str, int]]:
  """Every combination of the grid's shape axes, as ModelSize field overrides."""
  variants = [{}]
  for axis, field in SHAPE_AXES.items():
    values = cfg.grid[axis]
    if values:
      variants = [dict(v, **{field: int(x)}) for v in variants for x in values]
  return variants


def resolve_size(cfg: ml_collections.ConfigDict, name: str, shape: dict | None = None):
  """The ModelSize a grid size name means, with the shape axes applied."""
  import dataclasses
  from models import sizes as sizes_lib
  field = f"sizes.{name}" if name in cfg.sizes else "grid.size"
  try:
    if name in cfg.sizes:
      fields = dict(cfg.sizes[name].to_dict())
      base = fields.pop("base", None)
      size = (dataclasses.replace(sizes_lib.get(base), name=name, **fields) if base
              else sizes_lib.ModelSize(name=name, **fields))
    else:
      size = sizes_lib.get(name)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"{field}: {e}") from e
  return _apply_shape(size, shape or {})


def _apply_shape(size, shape: dict):
  import dataclasses
  from models import sizes as sizes_lib
  if "num_encoder_layers" in shape and size.kind == sizes_lib.DECODER_ONLY:
    raise ConfigError(f"grid.encoder_layers: size {size.name!r} is decoder-only (no encoder)")
  if "d_model" in shape:  # keep head_dim and the d_ff / d_model ratio
    d = shape["d_model"]
    if d % size.head_dim:
      raise ConfigError(f"grid.d_model={d} is not a multiple of size {size.name!r}'s "
                        f"head_dim={size.head_dim}")
    shape = dict(shape, num_heads=d // size.head_dim, d_ff=round(size.d_ff * d / size.d_model))
  try:
    return dataclasses.replace(size, **shape)
  except ValueError as e:
    axis = next(a for a, f in SHAPE_AXES.items() if f in shape)
    raise ConfigError(f"grid.{axis}: {e}") from e


def _check_curve_fields(curves: Mapping) -> None:
  if not curves:
    raise ConfigError("fits.curves is empty: name at least one curve to fit")
  for name, fields in curves.items():
    given = set(fields)
    unknown, missing = given - set(CURVE_FIELDS), set(CURVE_FIELDS) - given
    if unknown or missing:
      problem = (f"unknown field {sorted(unknown)[0]!r}" if unknown
                 else f"missing field {sorted(missing)[0]!r}")
      raise ConfigError(f"fits.curves.{name}: {problem} (fields: {', '.join(CURVE_FIELDS)}; "
                        "config.curve(...) fills the defaults)")


def _check_grid(cfg: ml_collections.ConfigDict) -> None:
  grid = cfg.grid
  for axis in ("size", "D_p"):
    if not grid[axis]:
      raise ConfigError(f"grid.{axis} is empty: give at least one value")
  _check_increasing("grid.D_p", grid.D_p)
  for d_f in grid.D_f:
    if not isinstance(d_f, int) or isinstance(d_f, bool) or d_f < 0:
      raise ConfigError(f"grid.D_f must hold non-negative ints (0 = no finetune), got {d_f!r}")
  for axis in SHAPE_AXES:
    _check_positive(f"grid.{axis}", grid[axis])
  if grid.mixture and grid.p:
    raise ConfigError("grid.mixture and grid.p both set: the training data comes from one "
                      "(p builds the mixture of grid.pair[0] and grid.pair[1])")
  for name in grid.mixture:
    if name not in cfg.mixtures:
      raise ConfigError(
          f"grid.mixture names {name!r}, which is not in config.mixtures "
          f"(defined: {sorted(cfg.mixtures)})")
  for p in grid.p:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
      raise ConfigError(f"grid.p must hold weights in [0, 1], got {p!r}")
  if grid.p and len(grid.pair) != 2:
    raise ConfigError(f"grid.p weighs two pairs, grid.pair[0] against grid.pair[1]; "
                      f"grid.pair has {len(grid.pair)}")
  for pair in grid.pair:
    parse_pair(pair)


def _check_objective(cfg: ml_collections.ConfigDict) -> None:
  objective, grid = cfg.pretrain.objective, cfg.grid
  if objective not in OBJECTIVES:
    raise ConfigError(f"pretrain.objective={objective!r} must be one of {OBJECTIVES}")
  if objective != "translation" and not grid.mixture:
    raise ConfigError(f"grid.mixture is empty: pretrain.objective={objective!r} trains on "
                      "a mixture")
  if grid.p and objective != "translation":
    raise ConfigError("grid.p weighs translation pairs: it needs "
                      "pretrain.objective='translation'")
  evaluates_pairs = objective != "causal_lm" or finetunes(cfg)
  if evaluates_pairs and not grid.pair:
    raise ConfigError("grid.pair is empty: give the translation pairs to evaluate on")
  if objective == "causal_lm" and grid.pair and not finetunes(cfg):
    raise ConfigError("grid.pair is set but nothing translates: a causal LM is evaluated "
                      "on held-out text unless grid.D_f finetunes it")
  if finetunes(cfg) and objective == "translation" and (grid.p or not grid.mixture):
    raise ConfigError("grid.D_f: finetuning a model trained from scratch on its own pairs "
                      "is not a study shape here; use D_f=0")


def _check_eval(ecfg: ml_collections.ConfigDict) -> None:
  for field in ("max_examples", "batch_size", "max_decode_length", "lm_max_batches"):
    value = ecfg[field]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ConfigError(f"eval.{field} must be a positive int, got {value!r}")
  if ecfg.decode not in DECODE_METHODS:
    raise ConfigError(f"eval.decode={ecfg.decode!r} must be one of {DECODE_METHODS}")


def parse_pair(pair: str) -> tuple[str, str]:
  """'xa-ya' -> ('xa', 'ya')."""
  parts = str(pair).split("-")
  if len(parts) != 2 or not all(parts):
    raise ConfigError(f"grid.pair value {pair!r} is not of the form 'src-tgt'")
  return parts[0], parts[1]


def _check_known_fields(given: Mapping, known: Mapping, prefix: str) -> None:
  for key, value in given.items():
    field = f"{prefix}{key}"
    if key not in known:
      if any(prefix.startswith(p) for p in FREE_FORM):
        continue  # free-form maps, checked by their own users
      where = "grid axis" if prefix == "grid." else "config field"
      raise ConfigError(
          f"unknown {where} {field!r} (known: {', '.join(sorted(known))})")
    if isinstance(value, Mapping) and isinstance(known[key], Mapping) and known[key]:
      _check_known_fields(value, known[key], prefix=f"{field}.")


def _check_increasing(field: str, values: Sequence[Any]) -> None:
  _check_positive(field, values)
  for a, b in zip(values, values[1:]):
    if not b > a:
      raise ConfigError(f"{field} must be strictly increasing, but {a} is followed by {b}")


def _check_positive(field: str, values: Sequence[Any]) -> None:
  for v in values:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
      raise ConfigError(f"{field} must hold positive numbers, got {v!r}")


def _check_checkpointing(tcfg: ml_collections.ConfigDict) -> None:
  for field, kinds in (("checkpoint_every_steps", (int,)),
                       ("checkpoint_every_minutes", (int, float))):
    value = tcfg[field]
    if not isinstance(value, kinds) or isinstance(value, bool) or value < 0:
      raise ConfigError(f"pretrain.{field} must be a non-negative number (0 = off), "
                        f"got {value!r}")


def _check_resources(rcfg: ml_collections.ConfigDict) -> None:
  for kind in STAGE_KINDS:
    for field in ("num_cpus", "num_gpus", "memory"):
      _check_quantity(f"resources.{kind}.{field}", rcfg[kind][field])
    for name, amount in rcfg[kind].resources.items():
      field = f"resources.{kind}.resources.{name}"
      if name in _RAY_OWN_RESOURCES:
        raise ConfigError(f"{field}: Ray's own resource; set resources.{kind}.num_cpus, "
                          "num_gpus or memory instead")
      _check_quantity(field, amount)
  retries = rcfg.max_retries
  if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
    raise ConfigError(f"resources.max_retries must be a non-negative int, got {retries!r}")


def _check_quantity(field: str, value: Any) -> None:
  """Ray's rule: a non-negative amount, whole above 1 (a share of one device below)."""
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
    raise ConfigError(f"{field} must be a non-negative number, got {value!r}")
  if value > 1 and value != int(value):
    raise ConfigError(f"{field}={value!r}: amounts above 1 must be whole numbers")


def _check_rates(field: str, rates: Mapping[str, float]) -> None:
  if not rates:
    raise ConfigError(f"{field} is empty")
  for key, rate in rates.items():
    if not isinstance(rate, (int, float)) or rate <= 0:
      raise ConfigError(f"{field}.{key} must be a positive rate, got {rate!r}")


def _check_packing(cfg: ml_collections.ConfigDict, size) -> None:
  """A decoder-only model reads translation as a prefix LM, one example per row."""
  from models import sizes as sizes_lib
  if size.kind != sizes_lib.DECODER_ONLY:
    return
  for section, translates in (("pretrain", cfg.pretrain.objective != "causal_lm"),
                              ("finetune", finetunes(cfg))):
    if translates and cfg[section].pack:
      raise ConfigError(f"{section}.pack: size {size.name!r} is decoder-only and reads "
                        "translation as a prefix LM, one example per row; packing is for "
                        "encoder-decoder sizes and causal-LM pretraining")


def _check_training(section: str, tcfg: ml_collections.ConfigDict) -> None:
  if not isinstance(tcfg.pack, bool):
    raise ConfigError(f"{section}.pack must be True or False, got {tcfg.pack!r}")
  for field in ("batch_size", "input_length", "target_length", "log_every"):
    value = tcfg[field]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ConfigError(f"{section}.{field} must be a positive int, got {value!r}")
  if not tcfg.learning_rate > 0:
    raise ConfigError(f"{section}.learning_rate must be positive, got {tcfg.learning_rate!r}")
  from scaling import optim  # the optimizers' and schedules' own rules
  optim.check(section, tcfg)
