"""seqio Tasks and Mixtures for pretraining and translation, and the batches the
trainer consumes.

Every data set goes through the same two task shapes:
- pretraining: a source yielding {'text': str} -> tokenize -> T5 span corruption;
- translation: a source yielding {src: str, tgt: str} (the TFDS WMT layout) ->
  'translate <src> to <tgt>: <source text>' / '<target text>' -> tokenize.
Sources: the synthetic world (`register_synthetic_world`), TFDS WMT and C4/mC4
(`register_tfds_translation`, `register_tfds_pretraining`) and local text files
(`register_text_pretraining`, `register_tsv_translation`). Registering the same
thing twice is a no-op; registering a different thing under a taken name is a
ValueError.

Batches: `get_batches` runs seqio's EncDecFeatureConverter (or LMFeatureConverter),
packed or not, and yields numpy dicts; `get_eval_examples` gives raw texts plus token
ids for decoding and BLEU.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import itertools
import math
import re
from typing import Iterator, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from scaling.data import malloc
from scaling.data import spans
from scaling.data import synthetic

# The input pipeline runs on the host: TensorFlow must not take the accelerators'
# memory (by default it would grab every GPU's) before JAX does.
try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TensorFlow already initialised its devices: too late to change
  pass

PREFIX_FORMAT = "translate {src} to {tgt}: "
# The synthetic train streams are already i.i.d. draws; a small buffer only mixes
# neighbouring examples and keeps the first batch fast.
_SYNTHETIC_SHUFFLE_BUFFER = 128
# Strings per tf.data element when streaming the synthetic train split (amortises
# the Python -> TF hand-off).
_GENERATOR_CHUNK = 256
# Finetuning subsets up to this many examples are held in memory (tens of MB of text);
# larger ones (Isik et al.'s D_f reach billions of tokens) are streamed from the source.
_IN_MEMORY_EXAMPLES = 200_000
# name -> a description of what was registered, for idempotent re-registration.
_REGISTERED: dict[str, tuple] = {}
# (task name, split) pairs that never end; get_eval_examples needs a limit there.
_ENDLESS: set[tuple[str, str]] = set()
_MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                   "decoder_loss_weights", "encoder_segment_ids", "decoder_segment_ids")


# --------------------------------------------------------------------------------------
# Preprocessors
# --------------------------------------------------------------------------------------


def output_features(vocab: seqio.Vocabulary, objective: str = "") -> dict[str, seqio.Feature]:
  """Inputs and targets; a causal LM's examples are targets alone."""
  features = {"inputs": seqio.Feature(vocab, add_eos=True),
              "targets": seqio.Feature(vocab, add_eos=True)}
  if objective == "causal_lm":
    del features["inputs"]
  return features


def translate(dataset, source_language: str, target_language: str, prefix: bool = True):
  """{src: text, tgt: text} -> {'inputs': [prefix] source, 'targets': target}."""
  head = PREFIX_FORMAT.format(src=source_language, tgt=target_language) if prefix else ""

  def fn(x):
    return {"inputs": tf.strings.join([head, x[source_language]]),
            "targets": x[target_language]}

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def text_to_targets(dataset, text_key: str = "text"):
  """Keeps only the text, as 'targets' (span corruption reads 'targets')."""
  return dataset.map(lambda x: {"targets": x[text_key]}, num_parallel_calls=tf.data.AUTOTUNE)


def lines_to_text(dataset):
  """Lines of a text file -> {'text': line}, dropping empty lines."""
  dataset = dataset.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)
  return dataset.map(lambda line: {"text": line}, num_parallel_calls=tf.data.AUTOTUNE)


def tsv_to_pair(dataset, source_language: str, target_language: str):
  """'source<TAB>target' lines -> {src: source, tgt: target}; other lines dropped."""
  fields = dataset.map(lambda line: tf.strings.split(line, "\t"))
  fields = fields.filter(lambda f: tf.logical_and(
      tf.equal(tf.size(f), 2), tf.reduce_all(tf.strings.length(f) > 0)))
  return fields.map(lambda f: {source_language: f[0], target_language: f[1]})


PRETRAIN_OBJECTIVES = ("span_corruption", "causal_lm")


def _pretrain_preprocessors(text_key: str = "text", objective: str = "span_corruption"):
  """T5 span corruption, or plain text as a causal LM's targets."""
  if objective not in PRETRAIN_OBJECTIVES:
    raise ValueError(f"objective={objective!r} must be one of {PRETRAIN_OBJECTIVES}")
  corrupt = [spans.span_corruption] if objective == "span_corruption" else []
  return [functools.partial(text_to_targets, text_key=text_key),
          seqio.preprocessors.tokenize,
          *corrupt,
          seqio.preprocessors.append_eos_after_trim]


def _translate_preprocessors(src: str, tgt: str, prefix: bool = True):
  return [functools.partial(translate, source_language=src, target_language=tgt,
                            prefix=prefix),
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos_after_trim]


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------


def _add_task(name: str, description: tuple, vocab, source_fn, preprocessors,
              shuffle_buffer_size: int = seqio.SHUFFLE_BUFFER_SIZE, objective: str = "") -> str:
  """Registers a Task once; `source_fn` builds the source only when needed."""
  if not re.fullmatch(r"[\w.:#]+", name):
    raise ValueError(f"task name {name!r} may only use letters, digits and _ . : #")
  description = (*description, _vocab_identity(vocab))
  if _known(name, description):
    return name
  seqio.TaskRegistry.add(name, source=source_fn(),
                         output_features=output_features(vocab, objective),
                         preprocessors=preprocessors, shuffle_buffer_size=shuffle_buffer_size)
  _REGISTERED[name] = description
  return name


def _known(name: str, description: tuple) -> bool:
  """True if `name` is registered as `description`; ValueError if as something else."""
  if name in _REGISTERED:
    if _REGISTERED[name] != description:
      raise ValueError(f"name {name!r} is already registered with a different "
                       f"definition: {_REGISTERED[name]!r}, now {description!r}")
    return True
  if name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names():
    raise ValueError(f"name {name!r} is already registered outside scaling.data")
  return False


def _vocab_identity(vocab) -> str:
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    return f"spm:{_hash_bytes(vocab.sp_model)}:{vocab.extra_ids}"
  return repr(vocab)


def _hash_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()[:16]


def _sanitize(text: str) -> str:
  return re.sub(r"[^\w]+", "_", text).strip("_")


# -- synthetic world -------------------------------------------------------------------


def pretrain_task_name(world_cfg: synthetic.WorldConfig, lang: str, domain: str,
                       objective: str = "span_corruption") -> str:
  kind = "pretrain" if objective == "span_corruption" else "lm"
  return f"synth_{world_cfg.short_hash}_{kind}_{lang}_{domain}"


def translate_task_name(world_cfg: synthetic.WorldConfig, src: str, tgt: str,
                        domain: str) -> str:
  return f"synth_{world_cfg.short_hash}_translate_{src}_{tgt}_{domain}"


@functools.lru_cache(maxsize=16)
def _world(world_cfg: synthetic.WorldConfig) -> synthetic.World:
  return synthetic.World(world_cfg)


def register_synthetic_world(world_cfg: synthetic.WorldConfig, vocab) -> list[str]:
  """Registers the world's tasks and returns their names (sorted).

  One span-corruption pretraining task per (language, domain):
  `synth_<hash8>_pretrain_<lang>_<domain>`, and one translation task per ordered
  pair of distinct languages and domain: `synth_<hash8>_translate_<src>_<tgt>_<domain>`
  (inputs 'translate <src> to <tgt>: <sentence>'). Splits: 'train' (endless),
  'validation', 'test'. <hash8> is `world_cfg.short_hash`.
  """
  world = _world(world_cfg)
  sizes = {"train": None, "validation": world_cfg.validation_size,
           "test": world_cfg.test_size}
  names = []
  for lang, domain in itertools.product(world.languages, world.domains):
    dataset_fn = functools.partial(_synthetic_monolingual, world=world, lang=lang,
                                   domain=domain)
    for objective in PRETRAIN_OBJECTIVES:
      name = pretrain_task_name(world_cfg, lang, domain, objective)
      names.append(_add_task(
          name, ("synthetic-pretrain", world_cfg.digest, lang, domain, objective), vocab,
          lambda fn=dataset_fn: seqio.FunctionDataSource(fn, synthetic.SPLITS, sizes),
          _pretrain_preprocessors(objective=objective), _SYNTHETIC_SHUFFLE_BUFFER,
          objective))
      _ENDLESS.add((name, "train"))
  for src, tgt in itertools.permutations(world.languages, 2):
    for domain in world.domains:
      name = translate_task_name(world_cfg, src, tgt, domain)
      dataset_fn = functools.partial(_synthetic_parallel, world=world, src=src, tgt=tgt,
                                     domain=domain)
      names.append(_add_task(
          name, ("synthetic-translate", world_cfg.digest, src, tgt, domain), vocab,
          lambda fn=dataset_fn: seqio.FunctionDataSource(fn, synthetic.SPLITS, sizes),
          _translate_preprocessors(src, tgt), _SYNTHETIC_SHUFFLE_BUFFER))
      _ENDLESS.add((name, "train"))
  return sorted(names)


def _chunked(iterator, columns: int):
  """Lists of _GENERATOR_CHUNK items, as numpy string columns."""
  while True:
    chunk = list(itertools.islice(iterator, _GENERATOR_CHUNK))
    if not chunk:
      return
    if columns == 1:
      yield np.array(chunk, dtype=object)
    else:
      yield tuple(np.array(column, dtype=object) for column in zip(*chunk))


def _synthetic_monolingual(split, shuffle_files, seed=None, *, world, lang, domain):
  del shuffle_files, seed  # the stream order is part of the world; the Task shuffles
  if split != "train":
    return tf.data.Dataset.from_tensor_slices(
        {"text": list(world.monolingual(lang, domain, split))})
  dataset = tf.data.Dataset.from_generator(
      lambda: _chunked(world.monolingual(lang, domain, "train"), 1),
      output_signature=tf.TensorSpec([None], tf.string))
  return dataset.unbatch().map(lambda text: {"text": text})


def _synthetic_parallel(split, shuffle_files, seed=None, *, world, src, tgt, domain):
  del shuffle_files, seed
  if split != "train":
    pairs = list(world.parallel(src, tgt, domain, split))
    return tf.data.Dataset.from_tensor_slices(
        {src: [s for s, _ in pairs], tgt: [t for _, t in pairs]})
  dataset = tf.data.Dataset.from_generator(
      lambda: _chunked(world.parallel(src, tgt, domain, "train"), 2),
      output_signature=(tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)))
  return dataset.unbatch().map(lambda s, t: {src: s, tgt: t})


def register_synthetic_mixture(world_cfg: synthetic.WorldConfig, shares: Mapping[str, float],
                               domains: Optional[tuple[str, ...]] = None,
                               name: Optional[str] = None) -> str:
  """A pretraining mixture over languages, e.g. {'xa': .5, 'ya': .5}; each language's
  share is split evenly over `domains` (default: all). Register the world first.

  Default name: synth_<hash8>_pretrain_mix_<lang><percent>_..., e.g.
  synth_1a2b3c4d_pretrain_mix_xa50_ya50 (plus _<domain> when one domain is chosen).
  """
  domains = tuple(world_cfg.domains if domains is None else domains)
  for domain in domains:
    if domain not in world_cfg.domains:
      raise ValueError(f"domain={domain!r} is not a domain of this world; "
                       f"domains: {', '.join(world_cfg.domains)}")
  _check_rates("shares", shares)
  total = sum(shares.values())
  if name is None:
    parts = [f"{lang}{round(100 * share / total)}" for lang, share in shares.items()]
    name = f"synth_{world_cfg.short_hash}_pretrain_mix_" + "_".join(parts)
    if domains != tuple(world_cfg.domains):
      name += "_" + "_".join(domains)
  rates = {pretrain_task_name(world_cfg, lang, domain): share / total / len(domains)
           for lang, share in shares.items() for domain in domains}
  for lang in shares:
    _world(world_cfg).language(lang)  # ValueError naming an unknown language
  return register_mixture(name, rates)


# -- mixtures --------------------------------------------------------------------------


def _check_rates(arg: str, rates: Mapping[str, float]):
  if not isinstance(rates, Mapping) or not rates:
    raise ValueError(f"{arg} must be a non-empty mapping of name -> rate, got {rates!r}")
  for key, rate in rates.items():
    if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
      raise ValueError(f"{arg}[{key!r}]={rate!r} must be a finite number > 0")


def register_mixture(name: str, rates: Mapping[str, float]) -> str:
  """A seqio Mixture sampling each task (or sub-mixture) with probability
  proportional to its rate. Returns `name`."""
  _check_rates("rates", rates)
  for task_name in rates:
    _provider(task_name, arg="rates")
  if not re.fullmatch(r"[\w.:#]+", name):
    raise ValueError(f"mixture name {name!r} may only use letters, digits and _ . : #")
  description = ("mixture", tuple(sorted((k, float(v)) for k, v in rates.items())))
  if not _known(name, description):
    seqio.MixtureRegistry.add(name, [(k, float(v)) for k, v in rates.items()])
    _REGISTERED[name] = description
  return name


def _provider(name: str, arg: str = "task_or_mixture"):
  if isinstance(name, str):
    if name in seqio.TaskRegistry.names():
      return seqio.TaskRegistry.get(name)
    if name in seqio.MixtureRegistry.names():
      return seqio.MixtureRegistry.get(name)
  known = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
  close = difflib.get_close_matches(str(name), known, n=3)
  hint = f"; did you mean {', '.join(close)}?" if close else ""
  raise ValueError(f"{arg}: unknown task or mixture {name!r}{hint}")


# -- subsets ---------------------------------------------------------------------------


def register_subset(task_name: str, num_examples: int, split: str = "train") -> str:
  """A Task whose `split` holds only the first `num_examples` examples of
  `task_name`'s (unshuffled, deterministic) `split`; other splits are unchanged.
  This is how finetuning gets a fixed set of D_f pairs. Name: <task>_n<num_examples>.
  """
  task = _provider(task_name, arg="task_name")
  if not isinstance(task, seqio.Task):
    raise ValueError(f"task_name={task_name!r} is a mixture; subsets need a task")
  if not isinstance(num_examples, int) or num_examples < 1:
    raise ValueError(f"num_examples={num_examples!r} must be a positive int")
  if split not in task.splits:
    raise ValueError(f"split={split!r} is not a split of {task_name}: {tuple(task.splits)}")
  name = f"{task_name}_n{num_examples}"
  description = ("subset", task_name, _REGISTERED.get(task_name), num_examples, split)
  if _known(name, description):
    return name
  base, subset_split = task.source, split
  held: list[tf.data.Dataset] = []  # a small subset, read once

  def dataset_fn(split, shuffle_files, seed=None):
    if split == subset_split:  # unshuffled: the same first examples every time
      subset = base.get_dataset(split=split, shuffle=False).take(num_examples)
      if num_examples > _IN_MEMORY_EXAMPLES:  # a paper-scale D_f: streamed, as it is
        return subset
      if not held:
        held.append(_in_memory(subset))
      return held[0]
    return base.get_dataset(split=split, shuffle=shuffle_files, seed=seed)

  sizes = {s: (num_examples if s == split else _input_size(base, s)) for s in task.splits}
  seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(dataset_fn, task.splits, sizes),
                         output_features=task.output_features,
                         preprocessors=task.preprocessors,
                         shuffle_buffer_size=seqio.SHUFFLE_BUFFER_SIZE)
  _REGISTERED[name] = description
  for endless_split in {s for t, s in _ENDLESS if t == task_name} - {split}:
    _ENDLESS.add((name, endless_split))
  return name


def _in_memory(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """The same elements, held in memory. Each epoch of a finetune (and each finetune of a
  grid) then re-reads memory, not the source: a generator-backed source (the synthetic
  world) would regenerate them in Python, and its iterator can take seconds to tear down.
  Elements whose features vary in shape stay as they were."""
  examples = list(numpy_elements(dataset))
  if not examples:
    return dataset
  try:
    columns = {key: np.stack([example[key] for example in examples]) for key in examples[0]}
    held = tf.data.Dataset.from_tensor_slices(columns)
  except (TypeError, ValueError):  # ragged features: the source as it is
    return dataset
  if held.element_spec != dataset.element_spec:
    return dataset
  return held


def _input_size(source, split) -> Optional[int]:
  try:
    return source.num_input_examples(split)
  except (KeyError, NotImplementedError):
    return None


# -- real data -------------------------------------------------------------------------


def register_tfds_translation(tfds_name: str, source_language: str, target_language: str,
                              vocab, *, name: Optional[str] = None,
                              splits=None, tfds_data_dir: Optional[str] = None,
                              prefix: bool = True) -> str:
  """A translation task over a TFDS data set with one text feature per language,
  e.g. ('wmt14_translate/de-en', 'de', 'en'). `splits` maps task splits to TFDS
  splits or slices (default: the data set's own). Without a ':version', the
  builder's current version is pinned. Default name: tfds_<tfds name>_<src>_<tgt>."""
  name = name or f"tfds_{_sanitize(_unversioned(tfds_name))}_{source_language}_{target_language}"
  tfds_name = _versioned(tfds_name, tfds_data_dir)
  description = ("tfds-translate", tfds_name, source_language, target_language,
                 _freeze(splits), tfds_data_dir, prefix)
  return _add_task(
      name, description, vocab,
      lambda: seqio.TfdsDataSource(tfds_name, tfds_data_dir=tfds_data_dir, splits=splits),
      _translate_preprocessors(source_language, target_language, prefix))


def register_tfds_pretraining(tfds_name: str, vocab, *, text_key: str = "text",
                              name: Optional[str] = None, splits=None,
                              tfds_data_dir: Optional[str] = None,
                              objective: str = "span_corruption") -> str:
  """A span-corruption task over a TFDS text data set, e.g. 'c4/en:3.1.0' or mC4
  ('c4/multilingual', splits={'train': 'de', 'validation': 'de-validation'}).
  Without a ':version', the builder's current version is pinned. Default name:
  tfds_<tfds name>_pretrain."""
  name = name or f"tfds_{_sanitize(_unversioned(tfds_name))}_pretrain"
  tfds_name = _versioned(tfds_name, tfds_data_dir)
  description = ("tfds-pretrain", tfds_name, text_key, _freeze(splits), tfds_data_dir,
                 objective)
  return _add_task(
      name, description, vocab,
      lambda: seqio.TfdsDataSource(tfds_name, tfds_data_dir=tfds_data_dir, splits=splits),
      _pretrain_preprocessors(text_key, objective), objective=objective)


def _unversioned(tfds_name: str) -> str:
  return tfds_name.split(":")[0]


def _versioned(tfds_name: str, data_dir: Optional[str]) -> str:
  """seqio wants 'name:version'; pin the builder's current version if none given."""
  if ":" in tfds_name:
    return tfds_name
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for unknown names/configs
    raise ValueError(f"tfds_name={tfds_name!r} is not a known TFDS data set: {e}") from e
  return f"{tfds_name}:{builder.version}"


def register_text_pretraining(name: str, split_to_filepattern: Mapping[str, str],
                              vocab, objective: str = "span_corruption") -> str:
  """A pretraining task over local text files, one text per line."""
  description = ("text-pretrain", _freeze(split_to_filepattern), objective)
  return _add_task(
      name, description, vocab,
      lambda: seqio.TextLineDataSource(dict(split_to_filepattern)),
      [lines_to_text, *_pretrain_preprocessors(objective=objective)], objective=objective)


def register_tsv_translation(name: str, split_to_filepattern: Mapping[str, str],
                             source_language: str, target_language: str, vocab, *,
                             prefix: bool = True) -> str:
  """A translation task over local 'source<TAB>target' files."""
  description = ("tsv-translate", _freeze(split_to_filepattern), source_language,
                 target_language, prefix)
  return _add_task(
      name, description, vocab,
      lambda: seqio.TextLineDataSource(dict(split_to_filepattern)),
      [functools.partial(tsv_to_pair, source_language=source_language,
                         target_language=target_language),
       *_translate_preprocessors(source_language, target_language, prefix)])


def _freeze(value):
  if isinstance(value, Mapping):
    return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  return value if value is None or isinstance(value, (str, int, float)) else repr(value)


# --------------------------------------------------------------------------------------
# Consumption
# --------------------------------------------------------------------------------------


def get_batches(task_or_mixture: str, split: str, input_length: int, target_length: int,
                batch_size: int, seed: Optional[int], shuffle: bool = True,
                repeat: bool = True, lm: bool = False, pack: bool = False,
                shard_info: Optional[seqio.ShardInfo] = None) -> Iterator[dict[str, np.ndarray]]:
  """Batches of model features (int32 numpy arrays, [batch_size, length]).

  Keys: encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
  decoder_loss_weights (seqio.EncDecFeatureConverter). Texts longer than the lengths
  are truncated (EOS kept). With pack=True each row holds as many whole examples as
  fit (seqio's packing), told apart by encoder_segment_ids and decoder_segment_ids
  (1, 2, ... and 0 for padding); the decoder inputs restart at each example. With repeat=False the data is read
  once and the final batch is filled up with all-zero rows (loss weight 0), so
  every batch has batch_size rows. With lm=True (causal-LM tasks) seqio's
  LMFeatureConverter gives the decoder features alone, `target_length` long, and
  `input_length` is unused. `shard_info` reads one of several disjoint shards of the
  data (seqio's sharding of the sources), e.g. this host's share of a global batch.
  For span-corruption tasks, target_length must be at least
  spans.span_corruption_target_length(input_length).
  """
  provider = _provider(task_or_mixture)
  _check_split(provider, split)
  for arg, value in (("input_length", input_length), ("target_length", target_length),
                     ("batch_size", batch_size)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{arg}={value!r} must be a positive int")
  if lm:
    lengths = {"targets": int(target_length)}
    converter = seqio.LMFeatureConverter(pack=pack)
  else:
    lengths = {"inputs": int(input_length), "targets": int(target_length)}
    converter = seqio.EncDecFeatureConverter(pack=pack)
  dataset = seqio.get_dataset(
      provider, task_feature_lengths=lengths, feature_converter=converter,
      dataset_split=split, shuffle=shuffle, num_epochs=None if repeat else 1, seed=seed,
      shard_info=shard_info, verbose=False)
  dataset = dataset.map(lambda x: {k: x[k] for k in _MODEL_FEATURES if k in x})
  if repeat:
    dataset = dataset.batch(batch_size, drop_remainder=True)
  else:
    dataset = dataset.batch(batch_size).map(functools.partial(_pad_rows, rows=batch_size))
  return numpy_elements(dataset.prefetch(tf.data.AUTOTUNE))


def numpy_elements(dataset: tf.data.Dataset) -> Iterator:
  """`dataset.as_numpy_iterator()`, undoing what its generator kernels do to glibc's
  malloc (see scaling.data.malloc). They may be built at any element (a mixture's
  sources, an epoch's restart), so the thresholds are set again after each one: a
  mallopt call costs microseconds, a batch milliseconds."""
  for element in dataset.as_numpy_iterator():
    malloc.restore()
    yield element


def _pad_rows(batch, rows: int):
  return {k: tf.pad(v, [[0, rows - tf.shape(v)[0]], [0, 0]]) for k, v in batch.items()}


def get_eval_examples(task: str, split: str, *, limit: Optional[int] = None,
                      input_length: Optional[int] = None,
                      target_length: Optional[int] = None) -> list[dict]:
  """Examples of a task split in order, for decoding and BLEU.

  Each dict: 'inputs' and 'targets' (raw text; for span corruption, the decoded
  corrupted texts), 'input_ids' and 'target_ids' (int32 numpy arrays ending in EOS,
  untruncated unless lengths are given). `limit` caps the count and is required
  for endless splits (the synthetic 'train'). Span-corruption tasks need
  input_length and target_length.
  """
  provider = _provider(task, arg="task")
  if not isinstance(provider, seqio.Task):
    raise ValueError(f"task={task!r} is a mixture; evaluation examples need a task")
  _check_split(provider, split)
  if limit is None and (task, split) in _ENDLESS:
    raise ValueError(f"split={split!r} of {task} is endless: pass limit=")
  if limit is not None and (not isinstance(limit, int) or limit < 1):
    raise ValueError(f"limit={limit!r} must be a positive int")
  lengths = None
  if input_length is not None or target_length is not None:
    lengths = {"inputs": input_length, "targets": target_length}
  dataset = provider.get_dataset(sequence_length=lengths, split=split, shuffle=False,
                                 num_epochs=1, seed=0,
                                 trim_output_features=lengths is not None)
  if limit is not None:
    dataset = dataset.take(limit)
  vocab = provider.output_features["targets"].vocabulary
  return [_eval_example(x, vocab) for x in numpy_elements(dataset)]


def _eval_example(x: dict, vocab) -> dict:
  def text(key):
    if f"{key}_pretokenized" in x:
      return x[f"{key}_pretokenized"].decode("utf-8")
    return vocab.decode(x[key].tolist())

  return {"inputs": text("inputs"), "targets": text("targets"),
          "input_ids": x["inputs"].astype(np.int32),
          "target_ids": x["targets"].astype(np.int32)}


def _check_split(provider, split: str):
  if split not in provider.splits:
    raise ValueError(f"split={split!r} is not a split of {provider.name}: "
                     f"{', '.join(map(str, provider.splits))}")
