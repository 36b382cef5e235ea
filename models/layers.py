"""Building blocks shared by the encoder-decoder and the decoder-only models.

T5 v1.1 conventions: pre-norm RMSNorm without mean subtraction, no biases, gated-GELU
MLP, attention logits not scaled by 1/sqrt(head_dim) (the scale is folded into the
query initialisation instead), relative position buckets shared across layers.

Every parameter is declared with LOGICAL axis names through NNX ``out_sharding``
metadata, and the main activations are constrained with logical names through
`constrain`. Which mesh axis a logical name lands on is decided elsewhere, by the
rules active in ``nnx.logical_axis_rules``; this file never names a mesh axis.

Shape suffixes: B batch, T query length, S key length, D d_model, H heads,
K head dim, F d_ff, V vocab, N relative-position buckets.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import meta as flax_meta
from flax.core import spmd as flax_spmd
from jax.sharding import PartitionSpec

# Added to attention logits of masked keys; finite so a fully masked row stays NaN-free.
MASK_BIAS = -1e9


# ---------------------------------------------------------------------------
# Sharding helpers (logical names only)
# ---------------------------------------------------------------------------


def logical_to_spec(names: Sequence[str | None]) -> PartitionSpec:
  """Maps logical axis names through the active rules, using each mesh axis once.

  Parameters and activations share logical names (e.g. 'embed'), but an activation
  such as [batch, length, embed] may not use a mesh axis twice: when the rules send
  'batch' to ('data', 'fsdp') and 'embed' to 'fsdp', the later 'embed' is left
  unsharded, which is what FSDP wants for activations.
  """
  rules = dict(flax_spmd.get_logical_axis_rules())
  used: set[str] = set()
  spec = []
  for name in names:
    target = rules.get(name) if name is not None else None
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a not in used)
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names; a no-op when no mesh or rules are active."""
  if not flax_meta.global_mesh_defined() or not flax_spmd.get_logical_axis_rules():
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names))


def make_param(
    init_fn,
    key: jax.Array,
    shape: tuple[int, ...],
    names: tuple[str | None, ...],
    param_dtype,
) -> nnx.Param:
  """A parameter annotated with logical axis names.

  It is placed on the mesh at creation when a mesh is active (``jax.set_mesh``);
  without a mesh (a laptop, a unit test) it is an ordinary array with the same
  metadata, so the same model code runs in both places.
  """
  return sharded_param(init_fn(key, shape, param_dtype), names)


def sharded_param(value: jax.Array, names: tuple[str | None, ...]) -> nnx.Param:
  """Wraps ``value`` as a Param with logical names, placing it on the active mesh.

  Placement is done here rather than by NNX's eager sharding so that the Param's
  metadata (part of the pytree structure) is the same with and without a mesh.
  """
  if flax_meta.global_mesh_defined():
    value = flax_spmd.shard_value(value, names, None, None)
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


@jax.tree_util.register_pytree_node_class
class DropoutRng:
  """Random bits for every dropout site of one forward pass, from ONE key.

  Each site draws from its own Philox stream (XLA's RngBitGenerator, keyed by the
  key's words, a stream number and the site's number) instead of
  ``jax.random.bernoulli`` with a fresh key per site: XLA expands threefry inline at
  every call, and with dozens of dropout sites per forward pass that made compiling
  a dropout train step several times slower on CPU. The masks do not depend on the
  mesh.

  Sites are numbered in Python as they are traced. The model's own sites use stream
  0; each block gets a fresh DropoutRng with a stream of its own (`for_block`),
  passed to it as an argument: ``nnx.remat`` traces one block and reuses that trace
  for the next, so the block's number must be data, not trace-time state, for
  its masks to differ from the other blocks' and not to depend on rematerialisation.
  """

  def __init__(self, key: jax.Array):
    words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    self._key_words = jnp.resize(words, (2,))
    self._stream = jnp.zeros((1,), jnp.uint32)
    self._site = 0
    self._blocks = 0

  def keep_mask(self, shape: tuple[int, ...], rate: float) -> jax.Array:
    self._site += 1  # Python-side: distinct streams per site, fixed at trace time
    state = jnp.concatenate([self._key_words, self._stream,
                             jnp.asarray([self._site], jnp.uint32)])
    _, bits = jax.lax.rng_bit_generator(state, shape, dtype=jnp.uint32,
                                        algorithm=jax.lax.RandomAlgorithm.RNG_PHILOX)
    return bits >= jnp.uint32(min(round(rate * 2.0**32), 2**32 - 1))

  def for_block(self) -> "DropoutRng":
    """A DropoutRng for the next block of this forward pass (streams 1, 2, ...)."""
    self._blocks += 1
    return DropoutRng._from_words(self._key_words, jnp.asarray([self._blocks], jnp.uint32))

  @classmethod
  def _from_words(cls, key_words, stream) -> "DropoutRng":
    rng = object.__new__(cls)
    rng._key_words, rng._stream, rng._site, rng._blocks = key_words, stream, 0, 0
    return rng

  def tree_flatten(self):
    return (self._key_words, self._stream), None

  @classmethod
  def tree_unflatten(cls, _, children) -> "DropoutRng":
    return cls._from_words(*children)


def block_dropout_rng(dropout_rng: DropoutRng | None) -> DropoutRng | None:
  """The DropoutRng of the next block, or None when dropout is off."""
  return None if dropout_rng is None else dropout_rng.for_block()


def make_dropout_rng(rate: float, deterministic: bool, rngs: nnx.Rngs | None):
  """The DropoutRng of one forward pass, or None when dropout is off."""
  if deterministic or rate == 0.0:
    return None
  if rngs is None:
    raise ValueError(
        f"dropout_rate={rate} with deterministic=False needs rngs=nnx.Rngs(dropout=...)")
  return DropoutRng(rngs.dropout())


def dropout(x: jax.Array, rate: float, dropout_rng: DropoutRng | None) -> jax.Array:
  """Inverted dropout; the identity when ``dropout_rng`` is None."""
  if dropout_rng is None or rate == 0.0:
    return x
  keep = dropout_rng.keep_mask(x.shape, rate)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def fan_in_init(scale: float = 1.0, fan_in_axes: Sequence[int] = (0,)):
  """Truncated-normal initialiser with variance scale / fan_in (T5X's default)."""

  def init(key, shape, dtype):
    fan_in = math.prod(shape[a] for a in fan_in_axes)
    std = math.sqrt(scale / fan_in) / 0.87962566103423978  # truncation correction
    return (jax.random.truncated_normal(key, -2.0, 2.0, shape) * std).astype(dtype)

  return init


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


class RMSNorm(nnx.Module):
  """T5 layer norm: scale only, no mean subtraction, no bias; computed in float32."""

  def __init__(self, dim: int, *, dtype, param_dtype, eps: float = 1e-6):
    self.scale = sharded_param(jnp.ones((dim,), param_dtype), ("norm",))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    x = x_BTD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return (x * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class Embed(nnx.Module):
  """Token embedding table [vocab, embed], unit-normal initialised as in T5."""

  def __init__(self, vocab_size: int, d_model: int, *, dtype, param_dtype, rngs):
    self.embedding = make_param(
        jax.random.normal, rngs.params(), (vocab_size, d_model), ("vocab", "embed"), param_dtype
    )
    self.dtype = dtype

  def __call__(self, tokens_BT: jax.Array) -> jax.Array:
    x_BTD = jnp.take(self.embedding[...], tokens_BT, axis=0).astype(self.dtype)
    return constrain(x_BTD, ("batch", "length", "embed"))


class OutputHead(nnx.Module):
  """Untied projection to the vocabulary; logits always come out in float32."""

  def __init__(self, d_model: int, vocab_size: int, *, dtype, param_dtype, rngs):
    self.kernel = make_param(
        fan_in_init(), rngs.params(), (d_model, vocab_size), ("embed", "vocab"),
        param_dtype,
    )
    self.dtype = dtype

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    logits_BTV = jnp.einsum(
        "btd,dv->btv", x_BTD.astype(self.dtype), self.kernel[...].astype(self.dtype),
        preferred_element_type=jnp.float32,
    )
    return constrain(logits_BTV, ("batch", "length", "vocab"))


class GatedGeluMLP(nnx.Module):
  """T5 v1.1 feed-forward: (gelu(x W0) * (x W1)) Wo."""

  def __init__(self, d_model: int, d_ff: int, dropout_rate: float, *, dtype,
               param_dtype, rngs):
    self.wi_0 = make_param(fan_in_init(), rngs.params(), (d_model, d_ff),
                           ("embed", "mlp"), param_dtype)
    self.wi_1 = make_param(fan_in_init(), rngs.params(), (d_model, d_ff),
                           ("embed", "mlp"), param_dtype)
    self.wo = make_param(fan_in_init(), rngs.params(), (d_ff, d_model),
                         ("mlp", "embed"), param_dtype)
    self.dropout_rate = dropout_rate
    self.dtype = dtype

  def __call__(self, x_BTD, *, dropout_rng=None):
    x_BTD = x_BTD.astype(self.dtype)
    gate_BTF = jnp.einsum("btd,df->btf", x_BTD, self.wi_0[...].astype(self.dtype))
    up_BTF = jnp.einsum("btd,df->btf", x_BTD, self.wi_1[...].astype(self.dtype))
    h_BTF = jax.nn.gelu(gate_BTF, approximate=True) * up_BTF
    h_BTF = constrain(h_BTF, ("batch", "length", "mlp"))
    h_BTF = dropout(h_BTF, self.dropout_rate, dropout_rng)
    out_BTD = jnp.einsum("btf,fd->btd", h_BTF, self.wo[...].astype(self.dtype))
    return constrain(out_BTD, ("batch", "length", "embed"))


class Attention(nnx.Module):
  """Multi-head attention without biases; keys/values projected separately so that
  decoding can cache them (`project_kv`) and attend with new queries (`__call__`)."""

  def __init__(self, d_model: int, num_heads: int, head_dim: int,
               dropout_rate: float, *, dtype, param_dtype, rngs):
    shape_in = (d_model, num_heads, head_dim)
    names_in = ("embed", "heads", "kv")
    # T5 folds the 1/sqrt(head_dim) logit scale into the query initialisation.
    self.query = make_param(fan_in_init(1.0 / head_dim), rngs.params(), shape_in,
                            names_in, param_dtype)
    self.key = make_param(fan_in_init(), rngs.params(), shape_in, names_in,
                          param_dtype)
    self.value = make_param(fan_in_init(), rngs.params(), shape_in, names_in,
                            param_dtype)
    self.out = make_param(fan_in_init(1.0, (0, 1)), rngs.params(),
                          (num_heads, head_dim, d_model), ("heads", "kv", "embed"),
                          param_dtype)
    self.dropout_rate = dropout_rate
    self.dtype = dtype

  def project_q(self, x_BTD: jax.Array) -> jax.Array:
    q = jnp.einsum("btd,dhk->bthk", x_BTD.astype(self.dtype),
                   self.query[...].astype(self.dtype))
    return constrain(q, ("batch", "length", "heads", "kv"))

  def project_kv(self, x_BSD: jax.Array) -> tuple[jax.Array, jax.Array]:
    x_BSD = x_BSD.astype(self.dtype)
    k = jnp.einsum("bsd,dhk->bshk", x_BSD, self.key[...].astype(self.dtype))
    v = jnp.einsum("bsd,dhk->bshk", x_BSD, self.value[...].astype(self.dtype))
    names = ("batch", "length", "heads", "kv")
    return constrain(k, names), constrain(v, names)

  def __call__(self, q_BTHK, k_BSHK, v_BSHK, bias_BHTS, *, dropout_rng=None) -> jax.Array:
    """Attends queries to keys/values; ``bias_BHTS`` (float32, broadcastable) holds
    the relative-position bias plus MASK_BIAS at masked keys."""
    logits_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSHK,
                             preferred_element_type=jnp.float32)
    probs_BHTS = jax.nn.softmax(logits_BHTS + bias_BHTS, axis=-1)
    probs_BHTS = dropout(probs_BHTS, self.dropout_rate, dropout_rng)
    ctx_BTHK = jnp.einsum("bhts,bshk->bthk", probs_BHTS.astype(self.dtype), v_BSHK)
    ctx_BTHK = constrain(ctx_BTHK, ("batch", "length", "heads", "kv"))
    out_BTD = jnp.einsum("bthk,hkd->btd", ctx_BTHK, self.out[...].astype(self.dtype))
    return constrain(out_BTD, ("batch", "length", "embed"))


# ---------------------------------------------------------------------------
# Positions and masks
# ---------------------------------------------------------------------------


def relative_position_bucket(relative_position, *, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> jax.Array:
  """T5's bucketing of (key - query) offsets: exact for small offsets, log-spaced
  up to ``max_distance``; with ``bidirectional=False`` all future offsets share
  bucket 0 (they are masked anyway)."""
  bucket = jnp.zeros_like(relative_position)
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket = bucket + (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  log_ratio = jnp.log(n.astype(jnp.float32) / max_exact + jnp.finfo(jnp.float32).eps)
  large = max_exact + (
      log_ratio / math.log(max_distance / max_exact) * (num_buckets - max_exact)
  ).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, n, large)


class RelativePositionBias(nnx.Module):
  """Learned per-head bias for each relative-position bucket (computed once, shared
  by all layers of a stack, as in T5)."""

  def __init__(self, num_buckets: int, max_distance: int, num_heads: int, *,
               bidirectional: bool, param_dtype, rngs):
    self.embedding = make_param(fan_in_init(1.0), rngs.params(),
                                (num_buckets, num_heads), ("relpos_buckets", "heads"),
                                param_dtype)
    self.num_buckets = num_buckets
    self.max_distance = max_distance
    self.bidirectional = bidirectional

  def __call__(self, q_positions_T: jax.Array, k_positions_S: jax.Array) -> jax.Array:
    """Returns the bias [1, H, T, S] in float32."""
    buckets_TS = relative_position_bucket(
        k_positions_S[None, :] - q_positions_T[:, None],
        bidirectional=self.bidirectional, num_buckets=self.num_buckets,
        max_distance=self.max_distance,
    )
    bias_TSH = jnp.take(self.embedding[...].astype(jnp.float32), buckets_TS, axis=0)
    return jnp.transpose(bias_TSH, (2, 0, 1))[None]


def apply_rotary(x_BTHK: jax.Array, positions_T: jax.Array, base: float) -> jax.Array:
  """Rotary position embedding (rotate-half form) over the head dimension."""
  half = x_BTHK.shape[-1] // 2
  freqs_K = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_TK = positions_T.astype(jnp.float32)[:, None] * freqs_K[None, :]
  sin = jnp.sin(angles_TK)[None, :, None, :]
  cos = jnp.cos(angles_TK)[None, :, None, :]
  x = x_BTHK.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x_BTHK.dtype)


def mask_to_bias(allowed_BTS: jax.Array) -> jax.Array:
  """Boolean [B, T, S] -> additive float32 bias [B, 1, T, S]."""
  return jnp.where(allowed_BTS, 0.0, MASK_BIAS).astype(jnp.float32)[:, None]


def padding_mask(q_len: int, key_tokens_BS: jax.Array) -> jax.Array:
  """Queries may attend to every non-pad key (token != 0): [B, T, S]."""
  valid_BS = key_tokens_BS != 0
  return jnp.broadcast_to(valid_BS[:, None, :], (valid_BS.shape[0], q_len,
                                                 valid_BS.shape[1]))


def segment_mask(q_segments_BT: jax.Array, k_segments_BS: jax.Array) -> jax.Array:
  """[B, T, S] for packed rows (seqio's segment ids, 0 = padding): a query attends to
  the keys of its own example only. Positions need no such care: the relative-position
  bias and rotary embeddings see only key - query offsets, the same inside a packed
  example as alone."""
  same_BTS = q_segments_BT[:, :, None] == k_segments_BS[:, None, :]
  return same_BTS & (k_segments_BS != 0)[:, None, :]


def causal_mask(q_positions_T: jax.Array, k_positions_S: jax.Array) -> jax.Array:
  """[1, T, S]: key position <= query position."""
  return (k_positions_S[None, :] <= q_positions_T[:, None])[None]


# ---------------------------------------------------------------------------
# The transformer block shared by encoder, decoder and decoder-only stacks
# ---------------------------------------------------------------------------


def write_cache(cache_BLHK: jax.Array, new_BTHK: jax.Array, index) -> jax.Array:
  """Writes ``new_BTHK`` into the cache at positions [index, index + T)."""
  return jax.lax.dynamic_update_slice(
      cache_BLHK, new_BTHK.astype(cache_BLHK.dtype), (0, index, 0, 0))


# Rematerialisation policies by config name (``model.remat``): which activations of a
# block the forward pass keeps for the backward pass; the rest are recomputed there.
REMAT_POLICIES = {
    "none": None,            # no rematerialisation: keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,    # keep only each block's input
    "dots_saveable": jax.checkpoint_policies.dots_saveable,   # keep matmul outputs
    # keep the weight matmuls (projections, MLP), recompute attention's batched ones
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_remat(remat: str) -> None:
  if remat not in REMAT_POLICIES:
    raise ValueError(f"remat={remat!r} is not one of {tuple(REMAT_POLICIES)}")


def remat_block(apply_block, remat: str):
  """``apply_block(block, *arrays) -> array``, with the activations inside it
  rematerialised under the policy ``remat`` names (``nnx.remat``); as is for 'none'.

  Wrap one block's whole call, so that what is saved per block is its input and
  whatever the policy keeps, and pass arrays computed per block inside it (e.g. the
  cross-attention keys and values) so that they are recomputed too.
  """
  check_remat(remat)
  if remat == "none":
    return apply_block
  return nnx.remat(apply_block, policy=REMAT_POLICIES[remat])


class Block(nnx.Module):
  """Pre-norm residual block: self-attention, optional cross-attention, gated MLP.

  ``size`` is a `models.sizes.ModelSize` (only its shape fields are read).
  """

  def __init__(self, size, *, cross_attention: bool, dtype, param_dtype, rngs):
    norm = lambda: RMSNorm(size.d_model, dtype=dtype, param_dtype=param_dtype)
    attention = lambda: Attention(size.d_model, size.num_heads, size.head_dim,
                                  size.dropout_rate, dtype=dtype,
                                  param_dtype=param_dtype, rngs=rngs)
    self.pre_self_attention_norm = norm()
    self.self_attention = attention()
    if cross_attention:
      self.pre_cross_attention_norm = norm()
      self.cross_attention = attention()
    self.has_cross_attention = cross_attention
    self.pre_mlp_norm = norm()
    self.mlp = GatedGeluMLP(size.d_model, size.d_ff, size.dropout_rate, dtype=dtype,
                            param_dtype=param_dtype, rngs=rngs)
    self.dropout_rate = size.dropout_rate
    self.rotary_base = size.rotary_base

  def __call__(self, x_BTD, self_bias_BHTS, *, cross=None, cache=None,
               cache_index=None, rotary_positions_T=None, dropout_rng=None):
    """Returns (x_BTD, cache). ``cross`` is (k_BSHK, v_BSHK, bias_BHTS) of the
    encoder output; ``cache`` a dict of 'k'/'v' [B, L, H, K] that receives this
    call's keys/values at ``cache_index`` (the attention then spans the cache)."""
    residual = lambda x, y: constrain(
        x + dropout(y, self.dropout_rate, dropout_rng),
        ("batch", "length", "embed"))
    h_BTD = self.pre_self_attention_norm(x_BTD)
    q, k, v = self.self_attention.project_q(h_BTD), *self.self_attention.project_kv(h_BTD)
    if rotary_positions_T is not None:
      q = apply_rotary(q, rotary_positions_T, self.rotary_base)
      k = apply_rotary(k, rotary_positions_T, self.rotary_base)
    if cache is not None:
      cache = {"k": write_cache(cache["k"], k, cache_index),
               "v": write_cache(cache["v"], v, cache_index)}
      k, v = cache["k"], cache["v"]
    x_BTD = residual(x_BTD, self.self_attention(q, k, v, self_bias_BHTS,
                                                dropout_rng=dropout_rng))
    if self.has_cross_attention:
      cross_k, cross_v, cross_bias = cross
      q = self.cross_attention.project_q(self.pre_cross_attention_norm(x_BTD))
      x_BTD = residual(x_BTD, self.cross_attention(q, cross_k, cross_v, cross_bias,
                                                   dropout_rng=dropout_rng))
    x_BTD = residual(x_BTD, self.mlp(self.pre_mlp_norm(x_BTD), dropout_rng=dropout_rng))
    return x_BTD, cache

  def init_cache(self, batch: int, length: int, dtype) -> dict[str, jax.Array]:
    shape = (batch, length) + self.self_attention.key.shape[1:]
    zeros = constrain(jnp.zeros(shape, dtype), ("batch", "length", "heads", "kv"))
    return {"k": zeros, "v": zeros}
