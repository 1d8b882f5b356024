"""Importing the package turns on torch's huge-page CPU allocations, unless the user chose otherwise.

Each case runs in a fresh interpreter: torch reads THP_MEM_ALLOC_ENABLE once, at its first
tensor, so only a process that imports eulerforge_trl before torch shows the effect. The effect
is read from the kernel: anonymous huge pages in the process's mappings after three 16 MiB
tensors. That shows only where the kernel gives huge pages on request (`madvise` mode); with
`always` or `never` the variable changes nothing and only its value is checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import os, eulerforge_trl, torch
tensors = [torch.ones(4 << 20) for _ in range(3)]
huge_kb = sum(int(line.split()[1]) for line in open("/proc/self/smaps") if line.startswith("AnonHugePages"))
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge_kb)
"""
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def kernel_thp_mode() -> str | None:
    """'always', 'madvise' or 'never' (the bracketed one), None where the kernel has no THP."""
    try:
        return THP_MODE.read_text().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


def probe(**env_overrides: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env.update(env_overrides)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    value, huge_kb = out.stdout.split()
    return value, int(huge_kb)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_large_cpu_tensors_get_huge_pages_unless_the_user_turned_them_off():
    default, user_off = probe(), probe(THP_MEM_ALLOC_ENABLE="0")
    assert default[0] == "1" and user_off[0] == "0"
    if kernel_thp_mode() == "madvise":
        assert default[1] >= 16 << 10  # at least one tensor's worth of huge pages, in KiB
        assert user_off[1] == 0
