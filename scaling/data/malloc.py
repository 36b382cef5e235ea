"""glibc's malloc thresholds, which TensorFlow's generator datasets pin.

Building a `tf.data.Dataset.from_generator` kernel (the synthetic world's sources) calls
`mallopt(M_MMAP_THRESHOLD, 128 KiB)` on Python 3.11 (TensorFlow's
`ApplyPython311MemoryPatch`). That switches off glibc's sliding threshold for the whole
process: from then on every host buffer above 128 KiB that XLA:CPU allocates is a fresh
mmap, faulted in page by page and unmapped after use. A tiny model's train step then
makes ~11,000 page faults and takes about twice as long. `restore()` sets the thresholds
where glibc's sliding threshold would have settled (its 32 MiB maximum).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # the ratio glibc's sliding threshold keeps


@functools.cache
def _glibc() -> ctypes.CDLL | None:
  """The C library when it is glibc (musl and macOS have no such thresholds)."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version  # only glibc has it
  except (OSError, AttributeError):
    return None
  return libc


def restore() -> bool:
  """Large buffers from the heap again, as before TensorFlow pinned the threshold;
  whether the C library took the settings."""
  libc = _glibc()
  if libc is None:
    return False
  return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
              and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
