"""The data a study reads, resolved from its config: vocabulary, pretraining
mixtures, finetuning subsets of D_f tokens, and evaluation sets.

This is the glue between the config's names ('aligned', 'xa-ya') and the seqio
tasks of `scaling.data`; the stages ask it for batches and never name a task.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import threading
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from etils import epath

import seqio

from scaling import config as config_lib
from scaling import grid
from scaling import train as train_lib
from scaling.data import spans
from scaling.data import synthetic
from scaling.data import tasks
from scaling.data import vocab as vocab_lib

# Examples read to count the tokens of a finetuning subset exactly; past this the
# subset size is extrapolated from their mean length.
_EXACT_COUNT_LIMIT = 20_000
_VOCAB_MULTIPLE = 128  # pad the embedding table for efficient sharding and matmuls
# A training run's batches up to its budget are held in memory (and replayed by every
# run on the same data) up to this size; past it, the stream is read as it goes.
_HELD_TRAIN_BYTES = 256 << 20
# A finetune's batches are held in memory (and replayed by every finetune of the same
# subset) up to this size; longer finetunes read their stream each time.
_HELD_FINETUNE_BYTES = 64 << 20


@dataclasses.dataclass
class EvalSet:
  inputs_BS: np.ndarray          # encoder inputs, padded with 0
  references: list[str]          # raw target text


@dataclasses.dataclass(frozen=True)
class InputShards:
  """A global batch is the row-wise concatenation of `count` independently read shards
  (seqio ShardInfo); a process reads the ones on its devices, `ids`."""
  ids: tuple[int, ...]
  count: int

  def batches(self, task_or_mixture: str, section, batch_size: int, seed: int,
              lm: bool = False) -> "Batches":
    rows = batch_size // self.count
    return Batches([tasks.get_batches(task_or_mixture, "train", section.input_length,
                                      section.target_length, rows, seed=seed, shuffle=True,
                                      repeat=True, lm=lm, pack=section.pack,
                                      shard_info=seqio.ShardInfo(i, self.count))
                    for i in self.ids])


class Batches:
  """A training stage's endless global batches: the rows of this process's input shards,
  one tf.data stream each, side by side. Close it when the stage is done: the streams
  are let go on a background thread, because tearing down a tf.data iterator mid-stream
  (its prefetch and shuffle threads) at times blocks for seconds."""

  def __init__(self, streams: list[Iterator[dict]]):
    self._streams = streams

  def __iter__(self) -> "Batches":
    return self

  def __next__(self) -> dict:
    parts = [next(stream) for stream in self._streams]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}

  def close(self) -> None:
    streams, self._streams = self._streams, []
    threading.Thread(target=streams.clear, name="release-input", daemon=True).start()

  def __enter__(self) -> "Batches":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


@dataclasses.dataclass
class FinetuneSubset:
  task: str
  n_examples: int
  n_tokens: int                  # input + target tokens of the subset (D_f as realised)
  section: ml_collections.ConfigDict

  def batches(self, batch_size: int, seed: int, shards: InputShards) -> Batches:
    return shards.batches(self.task, self.section, batch_size, seed)


@dataclasses.dataclass
class StudyInputs:
  cfg: ml_collections.ConfigDict
  vocab: object                  # seqio.SentencePieceVocabulary
  training: dict[str, list[str]]   # language or pair -> its training tasks (by objective)
  translate_tasks: dict[str, str]  # 'src-tgt' -> seqio task name (finetune / eval data)
  # Evaluation sets, read once: every evaluation of a grid reads the same ones.
  _held: dict = dataclasses.field(default_factory=dict, repr=False)

  @classmethod
  def build(cls, cfg: ml_collections.ConfigDict, workdir: epath.Path) -> "StudyInputs":
    """Loads (or trains) the vocabulary and registers every task the grid needs;
    a name the sources do not know fails here, before any compute."""
    objective = cfg.pretrain.objective
    if objective == "span_corruption":
      _check_span_lengths(cfg.pretrain)
    if cfg.data.source == "synthetic":
      vocab, training, translate = _synthetic_sources(cfg, workdir)
    elif cfg.data.source in ("tfds", "files"):
      vocab, training, translate = _registered_sources(cfg)
    else:
      raise config_lib.ConfigError(
          f"data.source={cfg.data.source!r} must be 'synthetic', 'tfds' or 'files'")
    missing = [pair for pair in cfg.grid.pair if pair not in translate]
    if missing:
      raise config_lib.ConfigError(
          f"grid.pair {missing[0]!r} has no translation data (available: {sorted(translate)})")
    inputs = cls(cfg, vocab, training, translate)
    for data in grid.training_data(cfg):
      inputs.training_mixture(data)  # unknown names fail now
    return inputs

  @property
  def model_vocab_size(self) -> int:
    return _VOCAB_MULTIPLE * math.ceil(self.vocab.vocab_size / _VOCAB_MULTIPLE)

  @property
  def lm(self) -> bool:
    return self.cfg.pretrain.objective == "causal_lm"

  def translate_task(self, pair: str) -> str:
    return self.translate_tasks[pair]

  def training_mixture(self, data: grid.TrainingData) -> str:
    """The seqio Mixture of a training run: each share split evenly over its tasks."""
    unknown = [name for name, _ in data.rates if name not in self.training]
    if unknown:
      field = f"mixtures.{data.label}" if self.cfg.grid.mixture else "grid.pair"
      raise config_lib.ConfigError(
          f"{field}: {unknown[0]!r} has no {self.cfg.pretrain.objective} training data "
          f"(available: {', '.join(sorted(self.training))})")
    rates = {task: share / len(self.training[name])
             for name, share in data.rates for task in self.training[name]}
    return tasks.register_mixture(
        f"{self.cfg.name}_{_sanitize(data.label)}_{grid.stable_hash(rates, 8)}", rates)

  def train_batches(self, data: grid.TrainingData, seed: int, shards: InputShards,
                    budget_tokens: int | None = None) -> Batches:
    """This process's rows of the training run's global batches. Given the run's token
    budget, the batches up to it are read once, before the first step, and held for
    every run on the same data (each model size of a grid reads the same stream): a
    stream read beside the steps costs more than its batches, as tf.data's threads
    take the cores the steps would use. Past what is held, and beyond
    _HELD_TRAIN_BYTES, the stream is read as it goes."""
    section = self.cfg.pretrain
    mixture = self.training_mixture(data)
    live = lambda: shards.batches(mixture, section, section.batch_size, seed, lm=self.lm)
    if budget_tokens is None or jax.process_count() > 1:  # token counts need all hosts
      return live()
    key = ("train", mixture, _key(section), seed, shards)
    held = self._held.setdefault(key, _HeldPrefix())
    held.read_until(budget_tokens, live)
    return Batches([held.replay(live)])

  def _once(self, key: tuple, read):
    if key not in self._held:
      self._held[key] = read()
    return self._held[key]

  def lm_eval_sets(self, data: grid.TrainingData) -> list[tuple[float, list[dict]]]:
    """(share, batches) of each task of the training mixture, on the held-out split:
    the LM loss is the share-weighted mean of their per-token losses."""
    ecfg = self.cfg.eval
    return [(share / len(self.training[name]),
             self._once(("lm", task, ecfg.lm_split), lambda task=task: self._lm_eval_batches(task)))
            for name, share in data.rates for task in self.training[name]]

  def _lm_eval_batches(self, task: str) -> list[dict]:
    ecfg, section = self.cfg.eval, self.cfg.pretrain
    batches = tasks.get_batches(task, ecfg.lm_split, section.input_length,
                                section.target_length, ecfg.batch_size, seed=0,
                                shuffle=False, repeat=False, lm=True)
    return list(itertools.islice(batches, ecfg.lm_max_batches))

  def finetune_subset(self, pair: str, d_f: int, section: ml_collections.ConfigDict) -> FinetuneSubset:
    """The first examples of the pair's training stream that hold D_f tokens."""
    task = self.translate_task(pair)
    n_examples, n_tokens = _examples_for_tokens(task, int(d_f))
    return FinetuneSubset(tasks.register_subset(task, n_examples), n_examples, n_tokens, section)

  def finetune_batches(self, subset: FinetuneSubset, batch_size: int, seed: int,
                       shards: InputShards, steps: int) -> Batches:
    """The `steps` batches of a finetune on `subset`. Every finetune of a grid on the
    same subset reads the same batches (they differ in their starting weights), so
    they are read once and held, when they fit in _HELD_FINETUNE_BYTES: opening a
    stream costs about a second, as much as a short finetune's steps."""
    section = subset.section
    row_bytes = 4 * 2 * (section.input_length + 2 * section.target_length)  # int32 features
    if steps * batch_size * row_bytes > _HELD_FINETUNE_BYTES:
      return subset.batches(batch_size, seed, shards)
    key = ("finetune", subset.task, _key(section), batch_size, seed, shards, steps)
    held = self._once(key, lambda: _first(subset.batches(batch_size, seed, shards), steps))
    return Batches([iter(held)])

  def eval_batches(self, pair: str, ecfg: ml_collections.ConfigDict) -> list[dict]:
    return self._once(("eval", pair, _key(ecfg)), lambda: self._eval_batches(pair, ecfg))

  def _eval_batches(self, pair: str, ecfg: ml_collections.ConfigDict) -> list[dict]:
    section = config_lib.translation_section(self.cfg)
    batches = tasks.get_batches(self.translate_task(pair), ecfg.split, section.input_length,
                                section.target_length, ecfg.batch_size, seed=0,
                                shuffle=False, repeat=False)
    return list(itertools.islice(batches, math.ceil(ecfg.max_examples / ecfg.batch_size)))

  def eval_examples(self, pair: str, ecfg: ml_collections.ConfigDict) -> EvalSet:
    return self._once(("examples", pair, _key(ecfg)), lambda: self._eval_examples(pair, ecfg))

  def _eval_examples(self, pair: str, ecfg: ml_collections.ConfigDict) -> EvalSet:
    examples = tasks.get_eval_examples(self.translate_task(pair), ecfg.split,
                                       limit=int(ecfg.max_examples))
    length = config_lib.translation_section(self.cfg).input_length
    inputs_BS = np.zeros((len(examples), length), np.int32)
    for row, example in enumerate(examples):
      ids = _truncate_keep_eos(example["input_ids"], length)
      inputs_BS[row, :len(ids)] = ids
    return EvalSet(inputs_BS, [example["targets"] for example in examples])

  def detokenize(self, tokens_T: np.ndarray) -> str:
    ids = [int(t) for t in tokens_T]
    if 1 in ids:
      ids = ids[:ids.index(1)]
    return self.vocab.decode([t for t in ids if t > 1])


class _HeldPrefix:
  """The first batches of a deterministic training stream, held in memory."""

  def __init__(self):
    self.batches: list[dict] = []
    self.tokens = 0
    self.full = False  # at _HELD_TRAIN_BYTES: later batches are read as they go

  def read_until(self, tokens: int, open_stream) -> None:
    if self.tokens >= tokens or self.full:
      return
    with open_stream() as stream:
      skip(stream, len(self.batches))
      nbytes = sum(v.nbytes for batch in self.batches for v in batch.values())
      while self.tokens < tokens:
        batch = next(stream)
        nbytes += sum(v.nbytes for v in batch.values())
        if nbytes > _HELD_TRAIN_BYTES:
          self.full = True
          return
        self.batches.append(batch)
        self.tokens += train_lib.batch_tokens(batch)

  def replay(self, open_stream) -> Iterator[dict]:
    """The held batches, then the rest of the stream (opened only if reached)."""
    yield from self.batches
    with open_stream() as stream:
      skip(stream, len(self.batches))
      yield from stream


def skip(stream: Iterator, count: int) -> None:
  """Reads and drops `count` batches (a resumed run's replay up to its step)."""
  for _ in range(count):
    next(stream)


def _first(batches: Batches, count: int) -> list[dict]:
  with batches:
    return list(itertools.islice(batches, count))


def _synthetic_sources(cfg, workdir: epath.Path):
  """The embedded world: its vocabulary, the training tasks of each language or pair
  for the study's objective, and the translation task of every pair."""
  try:
    world_cfg = synthetic.WorldConfig(**cfg.data.world.to_dict())
  except (TypeError, ValueError) as e:
    raise config_lib.ConfigError(f"data.world: {e}") from e
  vocab = vocab_lib.get_vocabulary(workdir / "vocab", world_cfg, int(cfg.data.vocab_size))
  tasks.register_synthetic_world(world_cfg, vocab)
  languages = synthetic.World(world_cfg).languages
  domains = tuple(cfg.data.pretrain_domains) or world_cfg.domains
  finetune_domain = cfg.data.finetune_domain or world_cfg.domains[0]
  for field, chosen in (("data.pretrain_domains", domains), ("data.finetune_domain", (finetune_domain,))):
    unknown = [d for d in chosen if d not in world_cfg.domains]
    if unknown:
      raise config_lib.ConfigError(
          f"{field}: {unknown[0]!r} is not a domain of the world {world_cfg.domains}")
  pairs = [f"{src}-{tgt}" for src, tgt in itertools.permutations(languages, 2)]
  translate = {pair: tasks.translate_task_name(world_cfg, *pair.split("-"), finetune_domain)
               for pair in pairs}
  objective = cfg.pretrain.objective
  if objective == "translation":  # from scratch, on the data it is tested on
    return vocab, {pair: [task] for pair, task in translate.items()}, translate
  training = {lang: [tasks.pretrain_task_name(world_cfg, lang, d, objective) for d in domains]
              for lang in languages}
  if objective == "span_corruption":
    # A mixture may also name a pair ('xa-ya'): that pair's parallel text, in the
    # pretraining domains (T5-style multi-task pretraining, or web bitext).
    for pair in pairs:
      training[pair] = [tasks.translate_task_name(world_cfg, *pair.split("-"), d)
                        for d in domains]
  return vocab, training, translate


def _registered_sources(cfg):
  """TFDS data sets or local files named in the config, through the same tasks."""
  if not cfg.data.vocabulary:
    raise config_lib.ConfigError(
        f"data.vocabulary must name a SentencePiece model when data.source={cfg.data.source!r}")
  if not epath.Path(cfg.data.vocabulary).exists():
    raise config_lib.ConfigError(f"data.vocabulary: no file at {cfg.data.vocabulary!r}")
  vocab = seqio.SentencePieceVocabulary(str(cfg.data.vocabulary), extra_ids=vocab_lib.EXTRA_IDS)
  data_dir = cfg.data.tfds_data_dir or None
  translate = {}
  for pair, spec in cfg.data.translation_sources.items():
    field = f"data.translation_sources.{pair}"
    translate[pair] = _checked(field, _translate_task, cfg, pair, _plain(spec), vocab, data_dir)
  if cfg.pretrain.objective == "translation":
    return vocab, {pair: [task] for pair, task in translate.items()}, translate
  training = {}
  for lang, spec in cfg.data.pretrain_sources.items():
    field = f"data.pretrain_sources.{lang}"
    training[lang] = [_checked(field, _pretrain_task, cfg, lang, _plain(spec), vocab, data_dir)]
  return vocab, training, translate


def _pretrain_task(cfg, lang: str, spec, vocab, data_dir) -> str:
  objective = cfg.pretrain.objective
  name = _task_name(cfg, f"{objective}_{lang}", spec)
  if cfg.data.source == "files":
    return tasks.register_text_pretraining(name, spec, vocab, objective)
  spec = {"name": spec} if isinstance(spec, str) else spec
  return tasks.register_tfds_pretraining(
      spec["name"], vocab, text_key=spec.get("text_key", "text"), splits=spec.get("splits"),
      name=name, tfds_data_dir=data_dir, objective=objective)


def _translate_task(cfg, pair: str, spec, vocab, data_dir) -> str:
  src, tgt = config_lib.parse_pair(pair)
  name = _task_name(cfg, f"translate_{src}_{tgt}", spec)
  if cfg.data.source == "files":
    return tasks.register_tsv_translation(name, spec, src, tgt, vocab)
  spec = {"name": spec} if isinstance(spec, str) else spec
  return tasks.register_tfds_translation(spec["name"], src, tgt, vocab, name=name,
                                         splits=spec.get("splits"), tfds_data_dir=data_dir)


def _task_name(cfg, what: str, spec) -> str:
  """Content-addressed, so two studies in one process never clash on a name."""
  digest = grid.stable_hash([cfg.data.source, spec, cfg.data.vocabulary, cfg.data.tfds_data_dir], 8)
  return f"{cfg.data.source}_{what}_{digest}"


def _checked(field: str, fn, *args):
  try:
    return fn(*args)
  except (KeyError, TypeError, ValueError) as e:
    raise config_lib.ConfigError(f"{field}: {e}") from e


def _plain(spec):
  return spec.to_dict() if hasattr(spec, "to_dict") else spec


def _key(section: ml_collections.ConfigDict) -> str:
  return grid.stable_hash(section.to_dict())


def _sanitize(label: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in label)


def _examples_for_tokens(task: str, d_f: int) -> tuple[int, int]:
  # Every example holds well over 4 tokens (prefix, text, EOS), so d_f // 4 suffice.
  cumulative = _cumulative_tokens(task, min(_EXACT_COUNT_LIMIT, d_f // 4 + 16))
  lengths = np.diff(cumulative, prepend=0)
  if cumulative[-1] >= d_f:
    n = int(np.searchsorted(cumulative, d_f) + 1)
    return n, int(cumulative[n - 1])
  n = math.ceil(d_f / lengths.mean())
  return n, int(round(n * lengths.mean()))


@functools.lru_cache(maxsize=64)
def _cumulative_tokens(task: str, limit: int) -> np.ndarray:
  examples = tasks.get_eval_examples(task, "train", limit=limit)
  return np.cumsum([len(e["input_ids"]) + len(e["target_ids"]) for e in examples])


def _truncate_keep_eos(ids: np.ndarray, length: int) -> np.ndarray:
  if len(ids) <= length:
    return ids
  return np.concatenate([ids[:length - 1], ids[-1:]])


def _check_span_lengths(section: ml_collections.ConfigDict) -> None:
  need = spans.span_corruption_target_length(int(section.input_length))
  if section.target_length < need:
    raise config_lib.ConfigError(
        f"pretrain.target_length={section.target_length} is too short for span corruption "
        f"of pretrain.input_length={section.input_length} (needs >= {need})")
