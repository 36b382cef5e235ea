"""T5 v1.1 / mT5-style encoder-decoder in Flax NNX.

Pre-norm RMSNorm blocks, gated-GELU MLP, no biases, a token embedding shared by
encoder and decoder, an untied output head, dropout, and T5 relative position
buckets: bidirectional in the encoder, causal in the decoder's self-attention, one
bias table per stack computed once and shared by all its layers. Encoder and decoder
depths are independent (``num_encoder_layers``, ``num_decoder_layers``).

Token conventions (T5 / seqio): 0 is padding and also the decoder start token.
Encoder keys with token 0 are masked (encoder self-attention and cross-attention);
the decoder's self-attention is causal only, so padding after a target can never
reach a real position. Packed rows (several examples per row, seqio's packing feature
converters) pass their segment ids, and every attention stays inside its example.

Decoding uses `init_decoding` (encoder pass, cross-attention keys/values, an empty
self-attention cache) and `decode_step` (one token for the whole batch); see
`models.decoding`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models import layers
from models.sizes import ENCODER_DECODER, ModelSize


class EncoderDecoder(nnx.Module):
  """``model(encoder_input_tokens_BS, decoder_input_tokens_BT) -> logits_BTV`` (f32)."""

  def __init__(self, size: ModelSize, *, dtype=jnp.float32, param_dtype=jnp.float32,
               remat: str = "none", rngs: nnx.Rngs):
    if size.kind != ENCODER_DECODER:
      raise ValueError(f"EncoderDecoder needs size.kind={ENCODER_DECODER!r}, got "
                       f"{size.kind!r} (size {size.name!r})")
    layers.check_remat(remat)
    self.size = size
    self.dtype = dtype
    self.remat = remat   # rematerialisation policy of each block (layers.REMAT_POLICIES)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    relpos = lambda bidirectional: layers.RelativePositionBias(
        size.relative_attention_num_buckets, size.relative_attention_max_distance,
        size.num_heads, bidirectional=bidirectional, param_dtype=param_dtype, rngs=rngs)
    self.token_embedder = layers.Embed(size.vocab_size, size.d_model, rngs=rngs, **kw)
    self.encoder_relpos = relpos(True)
    self.encoder_layers = nnx.List([
        layers.Block(size, cross_attention=False, rngs=rngs, **kw)
        for _ in range(size.num_encoder_layers)])
    self.encoder_norm = layers.RMSNorm(size.d_model, **kw)
    self.decoder_relpos = relpos(False)
    self.decoder_layers = nnx.List([
        layers.Block(size, cross_attention=True, rngs=rngs, **kw)
        for _ in range(size.num_decoder_layers)])
    self.decoder_norm = layers.RMSNorm(size.d_model, **kw)
    self.output_head = layers.OutputHead(size.d_model, size.vocab_size, rngs=rngs, **kw)

  def _dropout(self, x, dropout_rng):
    return layers.dropout(x, self.size.dropout_rate, dropout_rng)

  def _dropout_rng(self, deterministic, rngs):
    return layers.make_dropout_rng(self.size.dropout_rate, deterministic, rngs)

  # -- full-sequence passes -------------------------------------------------

  def encode(self, encoder_input_tokens_BS, *, encoder_segment_ids_BS=None,
             deterministic=True, rngs=None):
    """Encoder output [B, S, D] (compute dtype)."""
    return self._encode(encoder_input_tokens_BS, self._dropout_rng(deterministic, rngs),
                        encoder_segment_ids_BS)

  def decode(self, encoded_BSD, encoder_input_tokens_BS, decoder_input_tokens_BT, *,
             encoder_segment_ids_BS=None, decoder_segment_ids_BT=None,
             deterministic=True, rngs=None):
    """Decoder logits [B, T, V] (float32) given the encoder output."""
    return self._decode(encoded_BSD, encoder_input_tokens_BS, decoder_input_tokens_BT,
                        self._dropout_rng(deterministic, rngs),
                        encoder_segment_ids_BS, decoder_segment_ids_BT)

  def __call__(self, encoder_input_tokens_BS, decoder_input_tokens_BT, *,
               encoder_segment_ids_BS=None, decoder_segment_ids_BT=None,
               deterministic=True, rngs=None):
    """Teacher-forced logits [B, T, V] in float32. ``rngs`` (stream 'dropout') is
    needed only when ``deterministic=False`` and the size has dropout. Packed rows give
    both segment ids (0 = padding), unpacked rows neither."""
    if (encoder_segment_ids_BS is None) != (decoder_segment_ids_BT is None):
      raise ValueError("packed rows need both encoder and decoder segment ids")
    dropout_rng = self._dropout_rng(deterministic, rngs)
    encoded_BSD = self._encode(encoder_input_tokens_BS, dropout_rng, encoder_segment_ids_BS)
    return self._decode(encoded_BSD, encoder_input_tokens_BS, decoder_input_tokens_BT,
                        dropout_rng, encoder_segment_ids_BS, decoder_segment_ids_BT)

  def _encode(self, encoder_input_tokens_BS, dropout_rng, segment_ids_BS=None):
    S = encoder_input_tokens_BS.shape[1]
    positions_S = jnp.arange(S)
    allowed_BSS = (layers.padding_mask(S, encoder_input_tokens_BS) if segment_ids_BS is None
                   else layers.segment_mask(segment_ids_BS, segment_ids_BS))
    bias_BHSS = self.encoder_relpos(positions_S, positions_S) + layers.mask_to_bias(allowed_BSS)
    x_BSD = self._dropout(self.token_embedder(encoder_input_tokens_BS), dropout_rng)
    encoder_layer = layers.remat_block(
        lambda block, x, rng: block(x, bias_BHSS, dropout_rng=rng)[0], self.remat)
    for block in self.encoder_layers:
      x_BSD = encoder_layer(block, x_BSD, layers.block_dropout_rng(dropout_rng))
    return self._dropout(self.encoder_norm(x_BSD), dropout_rng)

  def _decode(self, encoded_BSD, encoder_input_tokens_BS, decoder_input_tokens_BT,
              dropout_rng, encoder_segment_ids_BS=None, decoder_segment_ids_BT=None):
    T = decoder_input_tokens_BT.shape[1]
    positions_T = jnp.arange(T)
    self_allowed = layers.causal_mask(positions_T, positions_T)
    if decoder_segment_ids_BT is None:
      cross_allowed = layers.padding_mask(T, encoder_input_tokens_BS)
    else:
      self_allowed = self_allowed & layers.segment_mask(decoder_segment_ids_BT,
                                                        decoder_segment_ids_BT)
      cross_allowed = layers.segment_mask(decoder_segment_ids_BT, encoder_segment_ids_BS)
    self_bias = self.decoder_relpos(positions_T, positions_T) + layers.mask_to_bias(self_allowed)
    cross_bias = layers.mask_to_bias(cross_allowed)
    x_BTD = self._dropout(self.token_embedder(decoder_input_tokens_BT), dropout_rng)

    def decoder_layer(block, x_BTD, encoded_BSD, block_rng):
      cross = (*block.cross_attention.project_kv(encoded_BSD), cross_bias)
      return block(x_BTD, self_bias, cross=cross, dropout_rng=block_rng)[0]

    decoder_layer = layers.remat_block(decoder_layer, self.remat)
    for block in self.decoder_layers:
      x_BTD = decoder_layer(block, x_BTD, encoded_BSD, layers.block_dropout_rng(dropout_rng))
    x_BTD = self._dropout(self.decoder_norm(x_BTD), dropout_rng)
    return self.output_head(x_BTD)

  # -- incremental decoding -------------------------------------------------

  def init_decoding(self, encoder_input_tokens_BS, max_length: int):
    """Runs the encoder once. Returns (context, cache): the context holds what every
    step reuses (cross-attention keys/values and mask); the cache holds per-layer
    self-attention keys/values for ``max_length`` target positions."""
    B, S = encoder_input_tokens_BS.shape
    encoded_BSD = self.encode(encoder_input_tokens_BS)
    cross_kv = [block.cross_attention.project_kv(encoded_BSD)
                for block in self.decoder_layers]
    context = {"cross_kv": cross_kv,
               "cross_bias": layers.mask_to_bias(layers.padding_mask(1, encoder_input_tokens_BS))}
    cache = [block.init_cache(B, max_length, self.dtype) for block in self.decoder_layers]
    return context, cache

  def decode_step(self, tokens_B, index, context, cache):
    """Feeds the decoder tokens at target position ``index`` (a traced scalar);
    returns (logits_BV in float32, updated cache)."""
    max_length = cache[0]["k"].shape[1]
    q_positions_1 = jnp.reshape(index, (1,))
    k_positions_L = jnp.arange(max_length)
    self_bias = (self.decoder_relpos(q_positions_1, k_positions_L)
                 + layers.mask_to_bias(layers.causal_mask(q_positions_1, k_positions_L)))
    x_B1D = self.token_embedder(tokens_B[:, None])
    new_cache = []
    for block, (k, v), layer_cache in zip(self.decoder_layers, context["cross_kv"], cache):
      x_B1D, layer_cache = block(x_B1D, self_bias, cross=(k, v, context["cross_bias"]),
                                 cache=layer_cache, cache_index=index)
      new_cache.append(layer_cache)
    logits_B1V = self.output_head(self.decoder_norm(x_B1D))
    return logits_B1V[:, 0], new_cache
