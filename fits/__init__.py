"""Scaling-law fitting: laws, a vectorised JAX fitter with bootstrap intervals, tables and plots.

    import fits
    res = fits.fit("log_law", D_p, bleu, holdout="smallest:4", bootstrap=1000)
    fits.tables.to_markdown({"en-de": res})

Pure numerics: nothing here imports the training code.  Importing `fits` is cheap; JAX, pandas and
matplotlib load only when a fit, a table or a plot needs them.  Compiled kernels are kept on disk
(fits.compilation), so the first fit in a new process loads them instead of compiling; set
FITS_COMPILATION_CACHE=off to keep nothing.
"""
from __future__ import annotations

import importlib

__all__ = ["fit", "FitResult", "laws", "tables", "plots", "published", "chain", "engine",
           "bounds", "compilation"]

_SUBMODULES = {"laws", "tables", "plots", "published", "engine", "core", "chain", "bounds",
               "compilation"}


def __getattr__(name):
    if name in ("fit", "FitResult"):
        return getattr(importlib.import_module("fits.core"), name)
    if name == "chain":
        return importlib.import_module("fits.chaining").chain
    if name in _SUBMODULES:
        return importlib.import_module(f"fits.{name}")
    raise AttributeError(f"module 'fits' has no attribute {name!r}")
