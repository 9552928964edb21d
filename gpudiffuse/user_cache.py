"""The user's cache folder (XDG) and small values memoised there across runs.

``$XDG_CACHE_HOME/gpudiffuse`` (``~/.cache/gpudiffuse``) holds JAX's persistent compilation cache
(``jax/``) and ``values.json``: results of slow look-ups keyed by everything they depend on,
including the version of the library that computed them. Nothing in it is needed: a missing,
unreadable or unwritable cache means computing again.
"""

from __future__ import annotations

import json
import os
import tempfile

__all__ = ["cache_folder", "cached_value"]


def cache_folder(name: str) -> str:
    """``$XDG_CACHE_HOME/gpudiffuse/<name>`` (not created)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gpudiffuse", name)


def cached_value(key: str, compute) -> float:
    """``compute()`` (a float), memoised in ``values.json`` under ``key``. GPUDIFFUSE_VALUE_CACHE
    names another file; an empty value turns the memo off."""
    path = os.environ.get("GPUDIFFUSE_VALUE_CACHE")
    if path is None:
        path = cache_folder("values.json")
    if not path:
        return float(compute())
    values = _read(path)
    if key in values:
        return float(values[key])
    value = float(compute())
    values = _read(path)  # another process may have added entries meanwhile
    values[key] = value
    folder = os.path.dirname(path) or "."
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as tmp:
            json.dump(values, tmp, indent=0, sort_keys=True)
        os.replace(tmp.name, path)  # atomic: a reader sees the old file or the new one
    except OSError:
        if tmp is not None and os.path.exists(tmp.name):
            os.remove(tmp.name)  # an unwritable cache: compute again next time
    return value


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}
