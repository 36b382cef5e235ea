"""Expand a study config into stages with content-addressed keys.

A stage's key hashes exactly what that stage reads: the config fields it uses, the
full model size (every field, not its name), the optimizer's fixed constants, and
the key of the stage it starts from. So finetunes that share a training run share
ONE run, changing a finetuning field never re-runs pretraining, and editing a code
constant never silently reuses a stale checkpoint. Fields that do not change
results (`log_every`, `model.remat`) stay out of the keys.

    train[size, shape, data]             one run; a checkpoint at every D_p
      (wsd) -> cooldown[train, D_p]      a decay branch from the stable phase
      -> finetune[model at D_p, pair, D_f]           when D_f > 0
        -> evaluate[model, pair]         one results row per evaluated pair
      -> evaluate[model at D_p, LM]      held-out loss of a causal LM
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Union

import ml_collections

from models import sizes as sizes_lib
from scaling import config as config_lib
from scaling import optim
from scaling.data import spans

LM = ""  # the `pair` of an evaluation on held-out LM text


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """What a training run reads: a named mixture, a weight p, or one pair."""
  label: str                       # the rows' `mixture` column
  rates: tuple[tuple[str, float], ...]   # language or pair -> share (summing to 1)
  p: float | None = None           # Fernandes' weight of grid.pair[0]

  def share(self, name: str) -> float:
    return dict(self.rates).get(name, 0.0)


@dataclasses.dataclass(frozen=True)
class Train:
  key: str
  size_name: str
  size: sizes_lib.ModelSize        # resolved, with the grid's shape axes applied
  shape: tuple[tuple[str, int], ...]  # the shape axes' values (for the rows)
  data: TrainingData
  objective: str
  D_p: tuple[int, ...]             # every budget this run serves
  fields: dict


@dataclasses.dataclass(frozen=True)
class Cooldown:
  """A WSD decay branch: from the stable run's checkpoint to the budget D_p."""
  key: str
  train: Train
  D_p: int
  fields: dict


@dataclasses.dataclass(frozen=True)
class Finetune:
  key: str
  source: "Weights"
  pair: str
  D_f: int
  fields: dict


@dataclasses.dataclass(frozen=True)
class Weights:
  """Where a model's weights come from: a training run's checkpoint at D_p, a
  cooldown branch, or a finetune."""
  stage: Union[Train, Cooldown, Finetune]
  D_p: int

  @property
  def train(self) -> Train:
    stage = self.stage
    while not isinstance(stage, Train):
      stage = stage.train if isinstance(stage, Cooldown) else stage.source.stage
    return stage

  @property
  def finetune(self) -> Finetune | None:
    return self.stage if isinstance(self.stage, Finetune) else None

  @property
  def key(self) -> str:
    return f"{self.stage.key}@{self.D_p}" if isinstance(self.stage, Train) else self.stage.key


@dataclasses.dataclass(frozen=True)
class Evaluate:
  key: str
  weights: Weights
  pair: str                        # LM ('') for held-out LM loss
  fields: dict


@dataclasses.dataclass(frozen=True)
class Plan:
  trains: tuple[Train, ...]
  cooldowns: tuple[Cooldown, ...]
  finetunes: tuple[Finetune, ...]
  evaluates: tuple[Evaluate, ...]

  @property
  def n_stages(self) -> int:
    return len(self.trains) + len(self.cooldowns) + len(self.finetunes) + len(self.evaluates)


def stable_hash(obj: Any, length: int = 12) -> str:
  """A hash of a JSON-able object that is the same in every process."""
  text = json.dumps(obj, sort_keys=True, default=_jsonable)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


def expand(cfg: ml_collections.ConfigDict) -> Plan:
  """All stages of the study, in an order they can run."""
  config_lib.validate(cfg)
  trains = [_train(cfg, name, shape, data)
            for name in cfg.grid.size for shape in config_lib.shape_variants(cfg)
            for data in training_data(cfg)]
  cooldowns, finetunes, evaluates = [], [], []
  for train in trains:
    for d_p in train.D_p:
      weights = Weights(train, d_p)
      if cfg.pretrain.schedule == "wsd":
        cooldown = _cooldown(train, d_p)
        cooldowns.append(cooldown)
        weights = Weights(cooldown, d_p)
      if train.objective == "causal_lm":
        evaluates.append(_evaluate(cfg, weights, LM))
      for pair in _evaluated_pairs(cfg, train):
        for d_f in cfg.grid.D_f or (0,):
          if d_f == 0:
            if train.objective != "causal_lm":
              evaluates.append(_evaluate(cfg, weights, pair))
            continue
          finetune = _finetune(cfg, weights, pair, int(d_f))
          finetunes.append(finetune)
          evaluates.append(_evaluate(cfg, Weights(finetune, d_p), pair))
  return Plan(tuple(trains), tuple(cooldowns), tuple(finetunes), tuple(evaluates))


def training_data(cfg: ml_collections.ConfigDict) -> list[TrainingData]:
  """The data of each training run: the grid's mixtures, its weights p, or (for
  translation from scratch with neither) each pair on its own."""
  if cfg.grid.mixture:
    return [TrainingData(name, _normalised(cfg.mixtures[name])) for name in cfg.grid.mixture]
  if cfg.grid.p:
    first, second = cfg.grid.pair
    return [TrainingData(f"p={p:g}", _normalised({first: p, second: 1.0 - p}), float(p))
            for p in cfg.grid.p]
  return [TrainingData(pair, ((pair, 1.0),)) for pair in cfg.grid.pair]


def _normalised(rates) -> tuple[tuple[str, float], ...]:
  total = sum(rates.values())
  return tuple((name, rate / total) for name, rate in rates.items() if rate > 0)


def _evaluated_pairs(cfg: ml_collections.ConfigDict, train: Train) -> tuple[str, ...]:
  own = [name for name, _ in train.data.rates]
  if train.objective == "translation" and not cfg.grid.p and not cfg.grid.mixture:
    return tuple(own)  # each pair trained on its own is evaluated on itself
  return tuple(cfg.grid.pair)


def _train(cfg, size_name: str, shape: dict, data: TrainingData) -> Train:
  section = cfg.pretrain
  size = config_lib.resolve_size(cfg, size_name, shape)
  fields = dict(data=_data_fields(cfg), size=dataclasses.asdict(size), rates=data.rates,
                objective=section.objective, model=_model_fields(cfg),
                train=_section_fields(section), constants=_constants(section),
                seed=cfg.seed)
  if section.schedule == "cosine":  # its horizon is the largest budget
    fields["horizon"] = max(cfg.grid.D_p)
  d_p = tuple(int(v) for v in cfg.grid.D_p)
  return Train(stable_hash(fields), size_name, size, tuple(sorted(shape.items())), data,
               section.objective, d_p, fields)


def _cooldown(train: Train, d_p: int) -> Cooldown:
  fields = dict(train=train.key, D_p=d_p)
  return Cooldown(stable_hash(fields), train, d_p, fields)


def _finetune(cfg, weights: Weights, pair: str, d_f: int) -> Finetune:
  section = cfg.finetune
  fields = dict(weights=weights.key, pair=pair, D_f=d_f, domain=cfg.data.finetune_domain,
                input_shards=config_lib.input_shard_count(cfg),
                source=_plain(cfg.data.translation_sources.get(pair)),
                train=_section_fields(section), constants=_constants(section), seed=cfg.seed)
  return Finetune(stable_hash(fields), weights, pair, d_f, fields)


def _evaluate(cfg, weights: Weights, pair: str) -> Evaluate:
  fields = dict(weights=weights.key, pair=pair, eval=cfg.eval.to_dict())
  if pair:  # translation inputs are read at the finetuning lengths
    section = config_lib.translation_section(cfg)
    fields["lengths"] = (section.input_length, section.target_length)
    fields["source"] = _plain(cfg.data.translation_sources.get(pair))
    fields["domain"] = cfg.data.finetune_domain
  return Evaluate(stable_hash(fields), weights, pair, fields)


def _section_fields(section: ml_collections.ConfigDict) -> dict:
  fields = section.to_dict()
  del fields["log_every"]  # how often to print changes no result
  if not fields["pack"]:  # keys from before packing existed stay valid
    del fields["pack"]
  for name in ("checkpoint_every_steps", "checkpoint_every_minutes"):  # nor how often to save
    fields.pop(name, None)
  if fields.get("together") == 1:  # in groups, a finetune differs by float rounding
    del fields["together"]
  return fields


def _model_fields(cfg: ml_collections.ConfigDict) -> dict:
  fields = cfg.model.to_dict()
  del fields["remat"]  # recomputation trades memory for time; results are the same
  return fields


def _constants(section: ml_collections.ConfigDict) -> dict:
  """The code's fixed training constants the section's run depends on."""
  constants = dict(optimizer=optim.constants(section.optimizer))
  if section.get("objective") == "span_corruption":
    constants["span_corruption"] = dict(noise_density=spans.NOISE_DENSITY,
                                        mean_noise_span_length=spans.MEAN_NOISE_SPAN_LENGTH)
  return constants


def _data_fields(cfg: ml_collections.ConfigDict) -> dict:
  """The data fields a training run reads (all but the finetuning data's)."""
  fields = cfg.data.to_dict()
  for finetune_only in ("finetune_domain", "translation_sources"):
    del fields[finetune_only]
  fields["input_shards"] = config_lib.input_shard_count(cfg)  # sets the data order
  return fields


def _plain(value: Any) -> Any:
  return value.to_dict() if hasattr(value, "to_dict") else value


def _jsonable(obj: Any) -> Any:
  if isinstance(obj, (tuple, set, frozenset)):
    return list(obj)
  if hasattr(obj, "to_dict"):
    return obj.to_dict()
  if dataclasses.is_dataclass(obj):
    return dataclasses.asdict(obj)
  return str(obj)
