"""Every study output reaches a non-local workdir through etils.epath: results rows,
fits tables, implied quantities and plots land in an in-memory gs:// bucket (epath's
own mocking hooks), and nothing falls through to a bare local `open`."""
import contextlib
import fnmatch
import io
import pathlib
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing

from scaling import config as config_lib
from scaling import report
from scaling import results

BUCKET = "gs://bucket/study"


class _MemoryFile(io.BytesIO):
  def __init__(self, store, path, mode):
    super().__init__(store.get(path, b"") if "r" in mode or "a" in mode else b"")
    self._store, self._path, self._mode = store, path, mode

  def close(self):
    if any(m in self._mode for m in "wa+"):
      self._store[self._path] = self.getvalue()
    super().close()


class MemoryBucket:
  """gs:// paths in a dict; any other path goes to the real filesystem."""

  def __init__(self):
    self.files: dict[str, bytes] = {}

  def _remote(self, path) -> bool:
    return str(path).startswith("gs://")

  def open(self, original, path, mode="r", *args, **kwargs):
    if not self._remote(path):
      return original(path, mode, *args, **kwargs)
    if "r" in mode and str(path) not in self.files:
      raise FileNotFoundError(path)
    handle = _MemoryFile(self.files, str(path), mode)
    return handle if "b" in mode else io.TextIOWrapper(handle, encoding="utf-8")

  def exists(self, original, path):
    if not self._remote(path):
      return original(path)
    p = str(path).rstrip("/")
    return p in self.files or any(f.startswith(p + "/") for f in self.files)

  def isdir(self, original, path):
    if not self._remote(path):
      return original(path)
    return any(f.startswith(str(path).rstrip("/") + "/") for f in self.files)

  def makedirs(self, original, path, *args, **kwargs):
    return None if self._remote(path) else original(path, *args, **kwargs)

  mkdir = makedirs

  def glob(self, original, pattern):
    if not self._remote(pattern):
      return original(pattern)
    return sorted(f for f in self.files if fnmatch.fnmatch(f, str(pattern)))

  def listdir(self, original, path):
    if not self._remote(path):
      return original(path)
    prefix = str(path).rstrip("/") + "/"
    return sorted({f[len(prefix):].split("/")[0] for f in self.files if f.startswith(prefix)})

  def replace(self, original, src, dst, *args, **kwargs):
    if not self._remote(src):
      return original(src, dst, *args, **kwargs)
    self.files[str(dst)] = self.files.pop(str(src))

  rename = replace

  def remove(self, original, path):
    if not self._remote(path):
      return original(path)
    if self.files.pop(str(path), None) is None:
      raise FileNotFoundError(path)

  @contextlib.contextmanager
  def mounted(self):
    # One mock_epath for every hook: a nested one would replace this whole table.
    names = ("open", "exists", "isdir", "makedirs", "mkdir", "glob", "listdir", "replace",
             "rename", "remove")
    # With TensorFlow installed epath sends gs:// to tf.io.gfile directly, past the
    # mockable backend table; take that shortcut away for the test.
    with mock.patch.object(gpath, "_is_tf_installed", lambda: False), \
        epath_testing.mock_epath(**{n: getattr(self, n) for n in names}):
      yield self


def _demo_rows():
  d_p = np.array([1e3, 2e3, 4e3, 8e3, 16e3])
  rows = pd.DataFrame(dict(
      key=[f"k{i}" for i in range(5)], status="ok", kind="translation", size="tiny",
      mixture="aligned", pair="xa-ya", D_f=100, D_p=d_p,
      ce=1.5 + 20 * d_p ** -0.5, bleu=np.log(3.0 * d_p ** 0.4) ** 1.5))
  return rows


def test_study_outputs_go_through_epath_to_a_remote_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a bare open('gs://...') would create ./gs:/ here
  cfg = config_lib.base_config()
  cfg.fits.bootstrap = 0
  with MemoryBucket().mounted() as bucket:
    for row in _demo_rows().to_dict("records"):
      results.write_row(BUCKET, row)
    frame = results.load(BUCKET)
    assert len(frame) == 5 and frame["D_p"].is_monotonic_increasing
    report.write(cfg, BUCKET, frame)
  written = set(bucket.files)
  assert {f"{BUCKET}/results/k{i}.json" for i in range(5)} <= written
  for name in ("fits.md", "fits.tex", "fits.csv", "plots/bleu_tiny.png", "plots/ce_tiny.png"):
    assert f"{BUCKET}/{name}" in written, name
  assert bucket.files[f"{BUCKET}/plots/bleu_tiny.png"].startswith(b"\x89PNG")
  assert not any(pathlib.Path(tmp_path).glob("gs*")), "something wrote to a local 'gs:' path"
  assert not any(".tmp" in f for f in written)
