"""Rematerialisation (model.remat): the Trainer's compiled step needs less temporary
memory with it, and the loss and gradients stay the same, dropout included."""
import dataclasses
import functools

import jax
import numpy as np
import pytest
from flax import nnx

from models import layers, sizes
from scaling import bench_memory
from scaling import mesh as mesh_lib
from scaling import train

# Small models with dropout on, so that remat must reproduce the dropout masks too.
DEEP = dataclasses.replace(sizes.get("micro"), num_encoder_layers=2, num_decoder_layers=2,
                           d_ff=256, dropout_rate=0.1)
DEEP_LM = dataclasses.replace(sizes.get("lm_micro"), d_ff=256, dropout_rate=0.1)


def make_batch(size, batch=16, source=64, target=32, seed=0):
  rng = np.random.default_rng(seed)
  targets = rng.integers(2, size.vocab_size, (batch, target)).astype(np.int32)
  features = dict(decoder_input_tokens=np.pad(targets, ((0, 0), (1, 0)))[:, :-1],
                  decoder_target_tokens=targets,
                  decoder_loss_weights=np.ones((batch, target), np.float32))
  if size.kind == sizes.ENCODER_DECODER:
    features["encoder_input_tokens"] = rng.integers(
        2, size.vocab_size, (batch, source)).astype(np.int32)
  return features


def step_temp_bytes(remat: str) -> int:
  """Temporaries of the Trainer's compiled step, measured as `bench memory` does."""
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1), jax.devices()[:1])
  size = dataclasses.replace(DEEP, dropout_rate=0.0)   # compiles faster
  trainer = train.Trainer(train.ModelConfig(size, remat=remat),
                          train.StepConfig("adamw", 1e-3, 0, "constant", 0.0), mesh)
  # batch 32 x 64 tokens: activations outweigh the parameters many times over
  return bench_memory.step_memory(trainer, make_batch(size, batch=32)).temporaries


def test_remat_reduces_the_train_steps_temporary_memory():
  none, full = step_temp_bytes("none"), step_temp_bytes("full")
  assert full < 0.8 * none, (none, full)


@functools.lru_cache(maxsize=None)
def loss_and_grads(size, remat: str):
  model_cfg = train.ModelConfig(size, remat=remat)
  graphdef, params, rest = nnx.split(train.build_model(model_cfg, 0), nnx.Param, ...)
  batch = make_batch(size, batch=4, source=12, target=8)

  def loss_fn(params):
    model = nnx.merge(graphdef, params, rest)
    logits = train.forward(model, batch, dropout_key=jax.random.key(3))
    nll, n = train.cross_entropy(logits, batch["decoder_target_tokens"],
                                 batch["decoder_loss_weights"])
    return nll / n

  return jax.jit(jax.value_and_grad(loss_fn))(params)


@pytest.mark.parametrize("size, remat", [(DEEP, "full"), (DEEP_LM, "dots_saveable")],
                         ids=lambda x: getattr(x, "kind", x))
def test_remat_leaves_loss_and_gradients_unchanged(size, remat):
  loss, grads = loss_and_grads(size, remat)
  ref_loss, ref_grads = loss_and_grads(size, "none")
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads, ref_grads)


def test_each_block_draws_its_own_dropout_masks():
  # nnx.remat reuses one block's trace for the next: were the dropout site numbers
  # trace-time state, every block would repeat the first block's masks.
  root = layers.DropoutRng(jax.random.key(0))
  first, second = root.for_block(), root.for_block()
  assert not np.array_equal(first.keep_mask((64,), 0.5), second.keep_mask((64,), 0.5))


def test_unknown_remat_policy_is_an_error():
  with pytest.raises(ValueError, match="remat='some'"):
    train.build_model(train.ModelConfig(DEEP, remat="some"), 0)
