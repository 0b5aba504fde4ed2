"""Where facebench keeps things by default: caches, downloaded data, trained models, results.

One place, so each default can be moved with one environment variable (tests point all of
them at temporary folders; a cluster user points the caches at scratch space):

| what | variable | default |
|---|---|---|
| caches (aligned crops, adversarial examples, plugins', ...) | ``FACEBENCH_CACHE`` | ``user_cache_dir("facebench")`` |
| downloaded datasets | ``FACEBENCH_DATA`` | ``<cache>/data`` |
| trained models | ``FACEBENCH_MODELS`` | ``user_data_dir("facebench")/models`` |
| the runs CSV of ``facebench run`` | ``FACEBENCH_RESULTS`` | ``./facebench-results/runs.csv`` |
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "facebench"


def _env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def cache_root() -> Path:
    """Root of every on-disk cache (each kind in its own sub-folder)."""
    return _env("FACEBENCH_CACHE") or Path(platformdirs.user_cache_dir(APP))


def cache_dir(kind: str) -> Path:
    """``<cache root>/<kind>``: ``aligned``, ``adversarial``, or a plugin's own kind."""
    return cache_root() / kind


def data_root() -> Path:
    """Folder holding downloaded datasets (``lfw_home/`` ...), when ``--data-home`` is not given."""
    return _env("FACEBENCH_DATA") or cache_root() / "data"


def models_root() -> Path:
    """Where trained models are written by default."""
    return _env("FACEBENCH_MODELS") or Path(platformdirs.user_data_dir(APP)) / "models"


def default_runs_csv() -> Path:
    """The runs CSV ``facebench run`` appends to without ``--out``: never the package's own
    tracked ``results/``, so a first run edits no file of the installation."""
    return _env("FACEBENCH_RESULTS") or Path("facebench-results") / "runs.csv"
