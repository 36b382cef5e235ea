"""Decoder-only language model built from the encoder-decoder's blocks.

Causal self-attention with either T5 relative position buckets (bidirectional
buckets, one table shared by all layers) or rotary positions
(``size.position_encoding``). Used two ways:

* plain LM (Chinchilla-style grids): ``model(tokens_BT)``, causal attention; packed
  rows (several documents per row) also pass ``segment_ids_BT``, and a position
  attends only to earlier positions of its own document;
* prefix-LM translation: ``model(tokens_BT, prefix_lengths_B=P)``, where the first
  ``P[b]`` positions of row b are the source, attend to each other in both
  directions, and source positions holding token 0 are masked. Decoding
  (`init_decoding`/`decode_step`) uses the layout [source padded to S | 0, targets]:
  the prefix is the whole padded source and generation starts at position S with
  the decoder start token 0, the same layout a prefix-LM train step should use.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from models import layers
from models.sizes import DECODER_ONLY, ModelSize


def prefix_lm_mask(tokens_BT, prefix_lengths_B):
  """[B, T, T]: causal, plus bidirectional inside each row's prefix, minus pad keys
  inside the prefix."""
  T = tokens_BT.shape[1]
  positions_T = jnp.arange(T)
  in_prefix_BT = positions_T[None, :] < prefix_lengths_B[:, None]
  allowed_BTT = layers.causal_mask(positions_T, positions_T) | in_prefix_BT[:, None, :]
  pad_key_BT = in_prefix_BT & (tokens_BT == 0)
  return allowed_BTT & ~pad_key_BT[:, None, :]


class DecoderOnly(nnx.Module):
  """``model(tokens_BT, *, prefix_lengths_B=None) -> logits_BTV`` (float32)."""

  def __init__(self, size: ModelSize, *, dtype=jnp.float32, param_dtype=jnp.float32,
               remat: str = "none", rngs: nnx.Rngs):
    if size.kind != DECODER_ONLY:
      raise ValueError(f"DecoderOnly needs size.kind={DECODER_ONLY!r}, got {size.kind!r} "
                       f"(size {size.name!r})")
    layers.check_remat(remat)
    self.size = size
    self.dtype = dtype
    self.remat = remat   # rematerialisation policy of each block (layers.REMAT_POLICIES)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.token_embedder = layers.Embed(size.vocab_size, size.d_model, rngs=rngs, **kw)
    self.rotary = size.position_encoding == "rotary"
    if not self.rotary:
      self.relpos = layers.RelativePositionBias(
          size.relative_attention_num_buckets, size.relative_attention_max_distance,
          size.num_heads, bidirectional=True, param_dtype=param_dtype, rngs=rngs)
    self.decoder_layers = nnx.List([
        layers.Block(size, cross_attention=False, rngs=rngs, **kw)
        for _ in range(size.num_decoder_layers)])
    self.decoder_norm = layers.RMSNorm(size.d_model, **kw)
    self.output_head = layers.OutputHead(size.d_model, size.vocab_size, rngs=rngs, **kw)

  def _position_bias(self, q_positions_T, k_positions_S):
    if self.rotary:
      return jnp.zeros((1, 1, 1, 1), jnp.float32)
    return self.relpos(q_positions_T, k_positions_S)

  def _stack(self, x_BTD, bias_BHTS, positions_T, *, cache=None, cache_index=None,
             dropout_rng=None):
    rotary_positions = positions_T if self.rotary else None
    if cache is None:  # a full-sequence pass: the one that is differentiated
      layer = layers.remat_block(
          lambda block, x, rng: block(x, bias_BHTS, rotary_positions_T=rotary_positions,
                                      dropout_rng=rng)[0], self.remat)
      for block in self.decoder_layers:
        x_BTD = layer(block, x_BTD, layers.block_dropout_rng(dropout_rng))
      return x_BTD, None
    new_cache = []
    for block, layer_cache in zip(self.decoder_layers, cache):
      x_BTD, layer_cache = block(
          x_BTD, bias_BHTS, cache=layer_cache, cache_index=cache_index,
          rotary_positions_T=rotary_positions, dropout_rng=dropout_rng)
      new_cache.append(layer_cache)
    return x_BTD, new_cache

  def __call__(self, tokens_BT, *, prefix_lengths_B=None, segment_ids_BT=None,
               deterministic=True, rngs=None):
    """Logits [B, T, V] in float32; causal unless ``prefix_lengths_B`` is given."""
    B, T = tokens_BT.shape
    positions_T = jnp.arange(T)
    if segment_ids_BT is not None:
      if prefix_lengths_B is not None:
        raise ValueError("packed rows (segment_ids_BT) are causal LM rows: no prefix")
      allowed_BTT = (layers.causal_mask(positions_T, positions_T)
                     & layers.segment_mask(segment_ids_BT, segment_ids_BT))
    else:
      if prefix_lengths_B is None:
        prefix_lengths_B = jnp.zeros((B,), jnp.int32)
      allowed_BTT = prefix_lm_mask(tokens_BT, prefix_lengths_B)
    bias = self._position_bias(positions_T, positions_T) + layers.mask_to_bias(allowed_BTT)
    rate = self.size.dropout_rate
    dropout_rng = layers.make_dropout_rng(rate, deterministic, rngs)
    x_BTD = layers.dropout(self.token_embedder(tokens_BT), rate, dropout_rng)
    x_BTD, _ = self._stack(x_BTD, bias, positions_T, dropout_rng=dropout_rng)
    x_BTD = layers.dropout(self.decoder_norm(x_BTD), rate, dropout_rng)
    return self.output_head(x_BTD)

  # -- incremental decoding -------------------------------------------------

  def init_decoding(self, prefix_tokens_BS, max_length: int):
    """Prefills the cache with the whole padded prefix (bidirectional, pad keys
    masked). Returns (context, cache) for ``max_length`` generated positions."""
    B, S = prefix_tokens_BS.shape
    cache = [block.init_cache(B, S + max_length, self.dtype)
             for block in self.decoder_layers]
    positions_S = jnp.arange(S)
    prefix_lengths_B = jnp.full((B,), S, jnp.int32)
    bias = (self._position_bias(positions_S, jnp.arange(S + max_length))
            + layers.mask_to_bias(jnp.pad(prefix_lm_mask(prefix_tokens_BS, prefix_lengths_B),
                                          ((0, 0), (0, 0), (0, max_length)))))
    _, cache = self._stack(self.token_embedder(prefix_tokens_BS), bias, positions_S,
                           cache=cache, cache_index=0)
    key_valid_BL = jnp.concatenate(
        [prefix_tokens_BS != 0, jnp.ones((B, max_length), bool)], axis=1)
    return {"key_valid": key_valid_BL, "prefix_length": jnp.asarray(S, jnp.int32)}, cache

  def decode_step(self, tokens_B, index, context, cache):
    """Feeds the tokens at target position ``index`` (absolute position S + index);
    returns (logits_BV in float32, updated cache)."""
    position = context["prefix_length"] + index
    key_valid_BL = context["key_valid"]
    k_positions_L = jnp.arange(key_valid_BL.shape[1])
    q_positions_1 = jnp.reshape(position, (1,))
    allowed_B1L = key_valid_BL[:, None, :] & layers.causal_mask(q_positions_1, k_positions_L)
    bias = self._position_bias(q_positions_1, k_positions_L) + layers.mask_to_bias(allowed_B1L)
    x_B1D, cache = self._stack(self.token_embedder(tokens_B[:, None]), bias, q_positions_1,
                               cache=cache, cache_index=position)
    logits_B1V = self.output_head(self.decoder_norm(x_B1D))
    return logits_B1V[:, 0], cache
