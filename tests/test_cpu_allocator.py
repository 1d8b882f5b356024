"""torch's huge-page CPU allocations: on in the CLI entry points, opt-in for library users, never on import.

Each case runs in a fresh interpreter: torch reads THP_MEM_ALLOC_ENABLE once, at its first
tensor, so only a process that sets it before torch shows the effect. The effect is read from the
kernel: anonymous huge pages in the process's mappings after three 16 MiB tensors. That shows
only where the kernel gives huge pages on request (`madvise` mode); with `always` or `never` the
variable changes nothing and only its value is checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# what runs before torch in each case; then three large tensors and a look at /proc/self/smaps
BEFORE_TORCH = {
    "import": "import eulerforge_trl",
    "opt-in": "import eulerforge_trl; eulerforge_trl.enable_cpu_huge_pages()",
    # each entry point on a bad argument: it returns 2 after the allocator setting, before torch
    "eulerforge": "from eulerforge_trl.cli import main; main(['train', '--preset', '/no/such.yml'])",
    "train": "from eulerforge_trl.train import main; main(['/no/such.yml'])",
    "pipeline": "from eulerforge_trl.cli import pipeline_main; pipeline_main(['/no/such.yml'])",
}
PROBE = """
import os, sys
{before}
assert "torch" not in sys.modules, "torch was imported before the allocator setting could apply"
import torch
tensors = [torch.ones(4 << 20) for _ in range(3)]
huge_kb = sum(int(line.split()[1]) for line in open("/proc/self/smaps") if line.startswith("AnonHugePages"))
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge_kb)
"""
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")


def kernel_thp_mode() -> str | None:
    """'always', 'madvise' or 'never' (the bracketed one), None where the kernel has no THP."""
    try:
        return THP_MODE.read_text().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


def probe(case: str, **env_overrides: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env.update(env_overrides)
    code = PROBE.format(before=BEFORE_TORCH[case])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    value, huge_kb = out.stdout.splitlines()[-1].split()
    return value, int(huge_kb)


@linux_only
def test_importing_the_package_leaves_the_allocator_alone():
    value, huge_kb = probe("import")
    assert value == "None"
    if kernel_thp_mode() == "madvise":
        assert huge_kb == 0


@linux_only
@pytest.mark.parametrize("case", ["opt-in", "eulerforge", "train", "pipeline"])
def test_cli_entry_points_and_the_opt_in_give_large_cpu_tensors_huge_pages(case):
    value, huge_kb = probe(case)
    assert value == "1"
    if kernel_thp_mode() == "madvise":
        assert huge_kb >= 16 << 10  # at least one tensor's worth of huge pages, in KiB


@linux_only
@pytest.mark.parametrize("case", ["opt-in", "eulerforge"])
def test_the_users_zero_is_kept(case):
    value, huge_kb = probe(case, THP_MEM_ALLOC_ENABLE="0")
    assert value == "0"
    if kernel_thp_mode() == "madvise":
        assert huge_kb == 0


def test_opt_in_after_torch_warns_that_it_may_do_nothing(monkeypatch):
    import torch  # noqa: F401

    import eulerforge_trl

    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    with pytest.warns(UserWarning, match="before importing torch"):
        assert eulerforge_trl.enable_cpu_huge_pages() is True
