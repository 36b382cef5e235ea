"""seqio registration and batches: synthetic world, mixtures, subsets, TFDS, files."""
import collections
import itertools

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds
from tfds_fakes import write_tfds_metadata

from scaling.data import spans
from scaling.data import synthetic
from scaling.data import tasks
from scaling.data import vocab

CFG = synthetic.WorldConfig(seed=21, validation_size=40, test_size=60)
FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
            "decoder_loss_weights")


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
  return vocab.get_vocabulary(tmp_path_factory.mktemp("vocab"), CFG, vocab_size=600)


@pytest.fixture(scope="module")
def names(voc):
  return tasks.register_synthetic_world(CFG, voc)


def decode_rows(voc, tokens_BT):
  return [voc.decode([t for t in row.tolist() if t]) for row in tokens_BT]


def test_task_names(names):
  h = CFG.short_hash
  assert len(names) == 4 * 2 * 2 + 12 * 2   # (span corruption, LM) x language x domain
  assert f"synth_{h}_pretrain_xa_news" in names
  assert f"synth_{h}_lm_xa_news" in names
  assert f"synth_{h}_translate_xa_ya_fiction" in names
  assert tasks.translate_task_name(CFG, "xa", "ya", "fiction") in names


def test_lm_batches_are_targets_alone(names, voc):
  batch = next(tasks.get_batches(tasks.pretrain_task_name(CFG, "xa", "news", "causal_lm"),
                                 "validation", 8, 16, 4, seed=0, shuffle=False, lm=True))
  assert sorted(batch) == ["decoder_input_tokens", "decoder_loss_weights", "decoder_target_tokens"]
  targets = batch["decoder_target_tokens"]
  assert targets.shape == (4, 16)
  # plain text, shifted right by one: no sentinels, inputs are the targets delayed
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], targets[:, :-1])
  assert targets.max() < voc.vocab_size - vocab.EXTRA_IDS


def test_registering_twice_is_a_no_op_but_a_different_vocab_is_an_error(names, voc, tmp_path):
  assert tasks.register_synthetic_world(CFG, voc) == names
  other = vocab.get_vocabulary(tmp_path, CFG, vocab_size=500)
  with pytest.raises(ValueError, match="already registered with a different"):
    tasks.register_synthetic_world(CFG, other)


def test_translation_batches(names, voc):
  name = tasks.translate_task_name(CFG, "xa", "ya", "news")
  batch = next(tasks.get_batches(name, "train", 64, 40, 8, seed=0))
  assert set(batch) == set(FEATURES)
  assert batch["encoder_input_tokens"].shape == (8, 64)
  assert all(v.dtype == np.int32 and v.shape[1] == (64 if k.startswith("enc") else 40)
             for k, v in batch.items())
  targets = batch["decoder_target_tokens"]
  # Decoder inputs are targets shifted right, starting with 0; loss on real tokens.
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], targets[:, :-1])
  assert (batch["decoder_input_tokens"][:, 0] == 0).all()
  np.testing.assert_array_equal(batch["decoder_loss_weights"], targets != 0)
  # Rows are pairs from the start of the world's (shuffled) parallel stream.
  stream = dict(itertools.islice(synthetic.World(CFG).parallel("xa", "ya", "news", "train"),
                                 3000))
  for source, target in zip(decode_rows(voc, batch["encoder_input_tokens"]),
                            decode_rows(voc, targets)):
    assert source.startswith("translate xa to ya: ")
    assert stream[source[len("translate xa to ya: "):]] == target


def test_eval_examples_are_the_fixed_test_set(names):
  name = tasks.translate_task_name(CFG, "yb", "xb", "fiction")
  examples = tasks.get_eval_examples(name, "test")
  pairs = list(synthetic.World(CFG).parallel("yb", "xb", "fiction", "test"))
  assert [(e["inputs"], e["targets"]) for e in examples] == [
      ("translate yb to xb: " + s, t) for s, t in pairs]
  assert all(e["target_ids"][-1] == 1 and e["input_ids"].dtype == np.int32 for e in examples)
  again = tasks.get_eval_examples(name, "test")
  assert all(a["inputs"] == b["inputs"] and (a["target_ids"] == b["target_ids"]).all()
             for a, b in zip(again, examples))


def test_eval_examples_of_an_endless_split_need_a_limit(names):
  name = tasks.translate_task_name(CFG, "xa", "ya", "news")
  with pytest.raises(ValueError, match="endless"):
    tasks.get_eval_examples(name, "train")
  assert len(tasks.get_eval_examples(name, "train", limit=5)) == 5


def test_pretraining_batches_are_span_corrupted_and_full(names, voc):
  name = tasks.pretrain_task_name(CFG, "ya", "news")
  target_length = spans.span_corruption_target_length(64)
  batches = tasks.get_batches(name, "train", 64, target_length, 16, seed=0)
  batch = next(batches)
  sentinel_0 = voc.vocab_size - 1
  assert (batch["encoder_input_tokens"] == sentinel_0).any(axis=1).all()
  assert (batch["decoder_target_tokens"][:, 0] == sentinel_0).all()
  # Texts are concatenated, so almost every row fills the whole input length.
  assert ((batch["encoder_input_tokens"] != 0).sum(axis=1) == 64).mean() > 0.8
  with pytest.raises(ValueError, match="too short for span corruption"):
    next(tasks.get_batches(name, "train", 64, target_length - 1, 16, seed=0))


def test_batches_are_deterministic_given_the_seed(names):
  name = tasks.pretrain_task_name(CFG, "xb", "fiction")
  first = lambda seed: next(tasks.get_batches(name, "train", 32, 8, 4, seed=seed))
  a, b, c = first(1), first(1), first(2)
  assert all((a[k] == b[k]).all() for k in FEATURES)
  assert any((a[k] != c[k]).any() for k in FEATURES)


def test_a_single_pass_pads_the_last_batch(names):
  name = tasks.translate_task_name(CFG, "xa", "yb", "news")
  batches = list(tasks.get_batches(name, "validation", 48, 32, 16, seed=0, shuffle=False,
                                   repeat=False))
  assert [b["encoder_input_tokens"].shape for b in batches] == [(16, 48)] * 3
  real_rows = sum(int((b["decoder_loss_weights"].sum(axis=1) > 0).sum()) for b in batches)
  assert real_rows == CFG.validation_size


def test_mixture_samples_tasks_at_their_rates(names, voc):
  a = tasks.translate_task_name(CFG, "xa", "ya", "news")
  b = tasks.translate_task_name(CFG, "xb", "yb", "news")
  mixture = tasks.register_mixture("test_data_mix_3_to_1", {a: 3.0, b: 1.0})
  assert tasks.register_mixture("test_data_mix_3_to_1", {a: 3.0, b: 1.0}) == mixture
  batch = next(tasks.get_batches(mixture, "train", 48, 32, 800, seed=0))
  prefixes = collections.Counter(
      text.split(":")[0] for text in decode_rows(voc, batch["encoder_input_tokens"]))
  assert set(prefixes) == {"translate xa to ya", "translate xb to yb"}
  assert prefixes["translate xa to ya"] / 800 == pytest.approx(0.75, abs=0.06)
  with pytest.raises(ValueError, match="different definition"):
    tasks.register_mixture("test_data_mix_3_to_1", {a: 1.0, b: 1.0})


def test_synthetic_language_mixture(names):
  name = tasks.register_synthetic_mixture(CFG, {"xa": 0.5, "ya": 0.5})
  assert name == f"synth_{CFG.short_hash}_pretrain_mix_xa50_ya50"
  rates = seqio.get_mixture_or_task(name).rate_per_task_name
  assert rates == pytest.approx({tasks.pretrain_task_name(CFG, l, d): 0.25
                                 for l in ("xa", "ya") for d in CFG.domains})
  one_domain = tasks.register_synthetic_mixture(CFG, {"xb": 1, "yb": 3}, domains=("news",))
  assert one_domain == f"synth_{CFG.short_hash}_pretrain_mix_xb25_yb75_news"
  batch = next(tasks.get_batches(one_domain, "train", 32, 8, 4, seed=0))
  assert batch["encoder_input_tokens"].shape == (4, 32)


def test_subset_repeats_the_first_examples(names, voc):
  base = tasks.translate_task_name(CFG, "xa", "ya", "fiction")
  subset = tasks.register_subset(base, 10)
  assert subset == base + "_n10" and tasks.register_subset(base, 10) == subset
  expected = [(f"translate xa to ya: {s}", t) for s, t in itertools.islice(
      synthetic.World(CFG).parallel("xa", "ya", "fiction", "train"), 10)]
  examples = [(e["inputs"], e["targets"]) for e in tasks.get_eval_examples(subset, "train")]
  assert examples == expected
  for shuffle in (False, True):  # 30 rows = 3 epochs of the 10 pairs
    batch = next(tasks.get_batches(subset, "train", 48, 32, 30, seed=0, shuffle=shuffle))
    sources = collections.Counter(decode_rows(voc, batch["encoder_input_tokens"]))
    assert set(sources) == {s for s, _ in expected}
    if not shuffle:  # (shuffling mixes neighbouring epochs: seqio repeats, then shuffles)
      assert set(sources.values()) == {3}
  assert len(tasks.get_eval_examples(subset, "test")) == CFG.test_size


def test_a_large_subset_streams_the_same_examples(names, monkeypatch):
  monkeypatch.setattr(tasks, "_IN_MEMORY_EXAMPLES", 5)  # 11 examples: past the limit
  base = tasks.translate_task_name(CFG, "xa", "ya", "fiction")
  subset = tasks.register_subset(base, 11)
  source = seqio.get_mixture_or_task(subset).source.get_dataset(split="train", shuffle=False)
  assert "TensorSlice" not in type(source).__name__  # read from the source, not held
  expected = [f"translate xa to ya: {s}" for s, _ in itertools.islice(
      synthetic.World(CFG).parallel("xa", "ya", "fiction", "train"), 11)]
  assert [e["inputs"] for e in tasks.get_eval_examples(subset, "train")] == expected


@pytest.mark.parametrize("call, message", [
    (lambda: tasks.get_batches("synth_nope", "train", 8, 8, 2, seed=0), "'synth_nope'"),
    (lambda: tasks.get_batches(tasks.pretrain_task_name(CFG, "xa", "news"), "dev", 8, 8, 2,
                               seed=0), "split='dev'"),
    (lambda: tasks.get_batches(tasks.pretrain_task_name(CFG, "xa", "news"), "train", 0, 8,
                               2, seed=0), "input_length=0"),
    (lambda: tasks.register_mixture("test_data_bad", {"no_such_task": 1.0}),
     "'no_such_task'"),
    (lambda: tasks.register_mixture(
        "test_data_bad", {tasks.pretrain_task_name(CFG, "xa", "news"): -1.0}), "must be"),
    (lambda: tasks.register_synthetic_mixture(CFG, {"zz": 1.0}), "lang='zz'"),
    (lambda: tasks.register_synthetic_mixture(CFG, {"xa": 1.0}, domains=("law",)),
     "domain='law'"),
    (lambda: tasks.get_eval_examples("nope_task", "test"), "'nope_task'"),
    (lambda: tasks.register_subset(tasks.pretrain_task_name(CFG, "xa", "news"), 0),
     "num_examples=0"),
])
def test_bad_input_names_the_culprit(names, call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_unknown_task_error_suggests_close_names(names):
  typo = tasks.pretrain_task_name(CFG, "xa", "news").replace("news", "newz")
  with pytest.raises(ValueError, match="did you mean"):
    tasks.get_batches(typo, "train", 8, 8, 2, seed=0)


# -- real-data paths -------------------------------------------------------------------


def test_tfds_wmt_and_c4_through_the_same_functions(voc, tmp_path):
  data_dir = str(tmp_path)
  write_tfds_metadata(data_dir, "wmt14_translate/de-en", {"train": 30, "validation": 5,
                                                          "test": 7})
  write_tfds_metadata(data_dir, "c4/en", {"train": 30, "validation": 5})
  wmt = tasks.register_tfds_translation("wmt14_translate/de-en", "de", "en", voc,
                                        tfds_data_dir=data_dir)
  c4 = tasks.register_tfds_pretraining("c4/en", voc, tfds_data_dir=data_dir)
  assert (wmt, c4) == ("tfds_wmt14_translate_de_en_de_en", "tfds_c4_en_pretrain")
  with tfds.testing.mock_data(num_examples=7, data_dir=data_dir,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    batch = next(tasks.get_batches(wmt, "train", 32, 32, 4, seed=0))
    assert batch["encoder_input_tokens"].shape == (4, 32)
    assert all(t.startswith("translate de to en: ")
               for t in decode_rows(voc, batch["encoder_input_tokens"]))
    examples = tasks.get_eval_examples(wmt, "test")
    assert len(examples) == 7 and examples[0]["inputs"].startswith("translate de to en: ")
    batch = next(tasks.get_batches(c4, "train", 64, spans.span_corruption_target_length(64),
                                   4, seed=0))
    assert (batch["encoder_input_tokens"] == voc.vocab_size - 1).any(axis=1).all()
    mixture = tasks.register_mixture("test_data_wmt_c4", {wmt: 1.0, c4: 1.0})
    assert next(tasks.get_batches(mixture, "validation", 64, 32, 4, seed=0))


def test_local_text_files(voc, tmp_path):
  lines = [f"le kasama {i} semiqka paki le paqema ." for i in range(40)]
  (tmp_path / "mono_train.txt").write_text("\n".join(lines[:30]) + "\n\n")
  (tmp_path / "mono_validation.txt").write_text("\n".join(lines[30:]) + "\n")
  mono = tasks.register_text_pretraining(
      "test_data_local_mono", {"train": str(tmp_path / "mono_train.txt"),
                               "validation": str(tmp_path / "mono_validation.txt")}, voc)
  batch = next(tasks.get_batches(mono, "validation", 32, 8, 2, seed=0, shuffle=False))
  # Put the masked spans back: the result is a stretch of the file's text.
  sentinel_0 = voc.vocab_size - 1
  inputs, targets = batch["encoder_input_tokens"][0], batch["decoder_target_tokens"][0]
  spans_by_sentinel, current = {}, None
  for t in targets[targets > 1].tolist():
    current = spans_by_sentinel.setdefault(t, []) if t > sentinel_0 - 100 else current
    if t <= sentinel_0 - 100:
      current.append(t)
  restored = [u for t in inputs[inputs > 1].tolist() for u in spans_by_sentinel.get(t, [t])]
  assert spans_by_sentinel and voc.decode(restored).strip() in " ".join(lines[30:])
  pairs = [("li me qise .", "dy po hy ."), ("le pe .", "bo ho .")]
  (tmp_path / "pairs.tsv").write_text(
      "\n".join(f"{s}\t{t}" for s, t in pairs) + "\nmalformed line\n")
  tsv = tasks.register_tsv_translation("test_data_local_tsv",
                                       {"test": str(tmp_path / "pairs.tsv")}, "xa", "ya", voc)
  examples = tasks.get_eval_examples(tsv, "test")
  assert [(e["inputs"], e["targets"]) for e in examples] == [
      (f"translate xa to ya: {s}", t) for s, t in pairs]


def test_unknown_tfds_name_is_rejected(voc):
  with pytest.raises(ValueError, match="tfds_name='no_such_corpus/de-en'"):
    tasks.register_tfds_translation("no_such_corpus/de-en", "de", "en", voc)


def _page_faults_per_call(fn, arg, calls: int = 11) -> float:
  """The median count of minor page faults in a call of a jitted function (one call
  may meet the heap growing; the median is the steady state)."""
  import resource
  faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  fn(arg).block_until_ready()  # compiled
  counts = []
  for _ in range(calls):
    before = faults()
    fn(arg).block_until_ready()
    counts.append(faults() - before)
  return float(np.median(counts))


def test_reading_leaves_large_host_buffers_on_the_heap():
  """TensorFlow's generator datasets pin glibc's mmap threshold at 128 KiB (Python
  3.11); after that every large XLA:CPU buffer is a fresh mmap, page-faulted in (a train
  step took twice as long). Reading through `tasks` puts the thresholds back."""
  import jax
  import jax.numpy as jnp
  import tensorflow as tf
  from scaling.data import malloc
  if not malloc.restore():
    pytest.skip("not glibc")
  double = jax.jit(lambda x: x * 2.0)
  x = jnp.ones((1 << 20,), jnp.float32)
  generated = lambda: tf.data.Dataset.from_generator(
      lambda: iter(range(3)), output_signature=tf.TensorSpec((), tf.int64))
  list(generated().as_numpy_iterator())
  pinned = _page_faults_per_call(double, x)
  assert list(tasks.numpy_elements(generated())) == [0, 1, 2]
  restored = _page_faults_per_call(double, x)
  # 4 MiB is 1,024 pages: pinned, a call faults them all in
  assert restored < 50, f"{restored} page faults a call after reading ({pinned} before)"
