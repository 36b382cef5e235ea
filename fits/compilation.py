"""Compiled kernels that outlive the process, so that the first fit in a new process neither
compiles nor traces.

Two caches share one folder:
  JAX's persistent compilation cache (`jax_compilation_cache_dir`): skips XLA compilation of any
    kernel seen before.  Tracing and lowering, about a second per kernel shape, remain.
  the fitter's own executables, in <folder>/fits-executables/: one file per kernel and shape,
    loaded in milliseconds with nothing traced, lowered or compiled.

The folder: the one JAX already uses if anything set `jax_compilation_cache_dir` before the first
fit (a study runtime sets its own: fits never replaces it); otherwise fits sets its user cache
folder, $XDG_CACHE_HOME/fits/jax (default ~/.cache/fits/jax).  The environment variable
FITS_COMPILATION_CACHE=off turns both caches off (JAX's own cache stays as others set it);
FITS_COMPILATION_CACHE=/some/folder picks fits' folder instead of the user cache folder.

An executable's file name hashes everything that shapes its code: the fits sources that build
kernels, the law, the objective, the argument shapes, the jax and jaxlib versions and the device,
so a change to any of them compiles afresh.  Laws whose functions are defined outside fits.laws
are not stored (their code cannot be hashed reliably); they still use JAX's cache.  Like JAX's own
cache, the folder is trusted: loading an executable runs code, so never share it with anyone you
would not let run code on your machine.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
import threading
from typing import Any, Callable

ENV = "FITS_COMPILATION_CACHE"
_OFF = ("0", "off", "false", "no", "none")
_EXECUTABLES = "fits-executables"
_SOURCES = ("engine.py", "laws.py", "bounds.py", "compilation.py")

_OWN_KEY = {"xla_embed_ir_in_executable": False}  # the default; see _compile_fresh
_MAX_FILES = 256  # executables kept in the folder; the least recently used go first

_folder: list[str | None] = []  # [folder] once decided for this process
_loaded: dict[tuple, Callable] = {}
_from_disk: set[tuple] = set()
_hits = threading.local()  # JAX persistent-cache hits seen by this thread


def folder() -> str | None:
    """The cache folder in effect, deciding it (and setting JAX's) at the first call; None: off."""
    if not _folder:
        _folder.append(_configure())
    return _folder[0]


def _configure() -> str | None:
    import jax

    setting = os.environ.get(ENV, "").strip()
    if setting.lower() in _OFF or not jax.config.jax_enable_compilation_cache:
        return None
    current = jax.config.jax_compilation_cache_dir
    if not current:  # nothing chose a folder: take fits' own, never anyone else's
        current = setting or _user_folder()
        jax.config.update("jax_compilation_cache_dir", current)
    return current


def _user_folder() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fits", "jax")


def _cache_threshold(seconds: float):
    """A context in which this thread's compilations enter JAX's persistent cache only if they
    took at least `seconds`; other threads keep the threshold they had."""
    try:
        from jax._src import config as jax_config

        return jax_config.persistent_cache_min_compile_time_secs(seconds)
    except (ImportError, AttributeError):  # a JAX without the thread-local setting
        return contextlib.nullcontext()


def call(name: str, jitted, args: tuple, identity: str | None):
    """`jitted(*args)`, through an executable compiled for the shapes of `args`: from this
    process, from the folder, or compiled now (and stored).  `identity` names what besides the
    sources fixes the traced code (the law and the objective); None keeps the kernel out of the
    folder.  An executable from the folder that fails to run is removed, and the call retried
    through `jitted`."""
    signature = _signature(name, identity, args)
    executable = _loaded.get(signature) or _executable(signature, jitted, args)
    if signature not in _from_disk:
        return executable(*args)
    try:
        return executable(*args)
    except Exception:  # a stored executable this jaxlib cannot run after all
        _forget(signature)
        with _cache_threshold(0.0):
            return jitted(*args)


def _signature(name, identity, args) -> tuple:
    import jax

    leaves, tree = jax.tree_util.tree_flatten(args)
    return (name, identity, str(tree),
            tuple((tuple(getattr(v, "shape", ())), str(getattr(v, "dtype", type(v))))
                  for v in leaves))


def _executable(signature: tuple, jitted, args: tuple):
    where = folder()  # decided (and JAX's cache folder set) before the first compilation
    stored = where is not None and signature[1] is not None
    path = os.path.join(where, _EXECUTABLES, _digest(signature) + ".bin") if stored else None
    executable = _load(path) if path else None
    if executable is not None:
        _from_disk.add(signature)
    elif path is None:
        # the fitter's kernels compile in well under JAX's default threshold (1 s), yet a first
        # fit pays for several of them: let JAX's cache keep them all
        with _cache_threshold(0.0):
            executable = jitted.lower(*args).compile()
    else:
        executable, fresh = _compile_fresh(jitted, args)
        if fresh:
            _store(path, executable)
    _loaded[signature] = executable
    return executable


def _compile_fresh(jitted, args) -> tuple[Any, bool]:
    """Compile outside JAX's cache: the folder stores the kernel instead.  An executable that JAX's
    cache hands back runs, but on CPU it cannot be serialised again; so the compile neither writes
    to that cache (threshold: infinite) nor reads what a plain `jit` wrote there (an option left
    at its default, which changes the cache key only).  `fresh` is False if a hit happened anyway:
    then the executable is not stored."""
    _listen_for_cache_hits()
    hits = getattr(_hits, "count", 0)
    with _cache_threshold(float("inf")):
        executable = jitted.lower(*args).compile(compiler_options=_OWN_KEY)
    return executable, getattr(_hits, "count", 0) == hits


def _listen_for_cache_hits(registered: list = []) -> None:  # noqa: B006 (once per process)
    if not registered:
        import jax.monitoring

        def count(event, **_):
            if event == "/jax/compilation_cache/cache_hits":
                _hits.count = getattr(_hits, "count", 0) + 1

        jax.monitoring.register_event_listener(count)
        registered.append(True)


def _forget(signature: tuple) -> None:
    _loaded.pop(signature, None)
    _from_disk.discard(signature)
    where = folder()
    if where:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(where, _EXECUTABLES, _digest(signature) + ".bin"))


def _digest(signature: tuple) -> str:
    import jax
    import jaxlib

    device = jax.devices()[0]
    text = repr((signature, _sources_digest(), jax.__version__, jaxlib.__version__,
                 device.platform, getattr(device, "device_kind", "")))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _sources_digest(cache: dict = {}) -> str:  # noqa: B006 (computed once per process)
    if "digest" not in cache:
        here = os.path.dirname(os.path.abspath(__file__))
        sha = hashlib.sha256()
        for name in _SOURCES:
            with open(os.path.join(here, name), "rb") as fh:
                sha.update(fh.read())
        cache["digest"] = sha.hexdigest()
    return cache["digest"]


def _load(path: str):
    """The executable stored at path, or None (absent, or unreadable: then it is removed)."""
    if not os.path.exists(path):
        return None
    import jax
    from jax.experimental import serialize_executable

    try:
        with open(path, "rb") as fh:
            blob, in_tree, out_tree = pickle.load(fh)
        os.utime(path)  # recently used: the last to be evicted
        # on the one device the kernels run on (not every device a multi-device host offers)
        return serialize_executable.deserialize_and_load(
            blob, in_tree, out_tree, execution_devices=jax.devices()[:1])
    except Exception:  # a truncated or stale file: compile afresh
        with contextlib.suppress(OSError):
            os.remove(path)
        return None


def _store(path: str, executable: Any) -> None:
    """Write atomically (a temporary file renamed into place), so a reader in another process never
    sees half a file; a folder that cannot be written to only costs the next process a compile."""
    from jax.experimental import serialize_executable

    tmp = None
    try:
        payload = pickle.dumps(serialize_executable.serialize(executable))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
        _evict(os.path.dirname(path))
    except Exception:  # not serialisable here, or no room: the next process compiles again
        if tmp:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _evict(where: str) -> None:
    """Remove the least recently used executables beyond _MAX_FILES (files of older fits sources
    are never used again)."""
    files = [os.path.join(where, n) for n in os.listdir(where) if n.endswith(".bin")]
    if len(files) <= _MAX_FILES:
        return
    files.sort(key=lambda f: os.stat(f).st_mtime)
    for stale in files[:len(files) - _MAX_FILES]:
        with contextlib.suppress(OSError):
            os.remove(stale)


def law_identity(law) -> str | None:
    """What fixes a law's traced code besides the fits sources, or None when its functions are
    defined outside fits.laws (then nothing on disk may stand for them)."""
    functions = [law.model] + ([law.log_model] if law.log_model is not None else [])
    if any(getattr(fn, "__module__", None) != "fits.laws" for fn in functions):
        return None
    return repr((law.name, law.param_names, law.input_names, law.log_target,
                 [fn.__qualname__ for fn in functions]))
