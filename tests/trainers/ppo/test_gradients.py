"""Gradient averaging across processes, on a one-process gloo group (the maths and the calls)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from eulerforge_trl.trainers.ppo.gradients import average_gradients


@pytest.fixture
def one_process_group(tmp_path):
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_gradients_are_averaged_in_two_calls_and_gradless_parameters_stay_untouched(one_process_group, monkeypatch):
    a, b, c = (torch.nn.Parameter(torch.ones(3)) for _ in range(3))
    a.grad, c.grad = torch.tensor([2.0, 4.0, 6.0]), torch.tensor([1.0, 1.0, 1.0])
    calls = []
    real = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, *args, **kw: (calls.append(t.numel()), real(t, *args, **kw))[1])
    # world_size=2 with one process: the sum is this process's gradient, so the average is half of it
    average_gradients([a, b, c], world_size=2)
    torch.testing.assert_close(a.grad, torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(c.grad, torch.tensor([0.5, 0.5, 0.5]))
    assert b.grad is None, "a parameter no process has a gradient for must stay without one (AdamW skips it)"
    assert calls == [3, 6], "one call for which parameters have gradients, one bucket for all of them"
