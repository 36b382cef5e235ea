"""Flax NNX models for scaling-law studies: encoder-decoder and decoder-only families.

Models name logical axes only; the mapping to mesh axes lives in scaling/mesh.py.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from models import sizes
from models.decoder_only import DecoderOnly
from models.encoder_decoder import EncoderDecoder
from models.sizes import ModelSize


def build_model(size: ModelSize | str, *, dtype=jnp.float32, param_dtype=jnp.float32,
                remat: str = "none", rngs: nnx.Rngs):
  """The model for ``size`` (a ModelSize or a preset name), by ``size.kind``; ``remat``
  names the rematerialisation policy of its blocks (``models.layers.REMAT_POLICIES``)."""
  if isinstance(size, str):
    size = sizes.get(size)
  model_cls = EncoderDecoder if size.kind == sizes.ENCODER_DECODER else DecoderOnly
  return model_cls(size, dtype=dtype, param_dtype=param_dtype, remat=remat, rngs=rngs)


__all__ = ["DecoderOnly", "EncoderDecoder", "ModelSize", "build_model", "sizes"]
