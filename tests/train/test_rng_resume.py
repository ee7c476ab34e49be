"""Resuming the RNG states on a host with another number of GPUs or ranks (CUDA simulated: no GPU here)."""

from __future__ import annotations

import logging

import pytest
import torch

from sage_cli.train import checkpoint as ckpt


class FakeCuda:
    """Stands in for the torch.cuda RNG functions of a host with ``devices`` GPUs; records the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, devices: int) -> None:
        self.devices, self.calls = devices, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: devices > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
        monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: self.calls.append(("seed_all", seed)))
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)

    def set_rng_state(self, state: torch.Tensor, device: int) -> None:
        if device >= self.devices:  # what torch does for a device this host lacks
            raise RuntimeError(f"invalid device ordinal {device}")
        self.calls.append(("set", int(state[0]), device))


def saved_states(count: int) -> list[torch.Tensor]:
    return [torch.full((16,), 10 + i, dtype=torch.uint8) for i in range(count)]


@pytest.mark.parametrize(("saved", "devices", "expected"), [
    (4, 4, [("set", 10, 0), ("set", 11, 1), ("set", 12, 2), ("set", 13, 3)]),
    (8, 2, [("set", 10, 0), ("set", 11, 1)]),  # fewer GPUs: the first two states; 6 dropped
    (2, 4, [("seed_all", 7), ("set", 10, 0), ("set", 11, 1)]),  # more: devices 2, 3 seeded as a fresh start
    (0, 2, [("seed_all", 7)]),  # written on a CPU host
    (3, 0, []),  # resumed on a CPU host
])
def test_cuda_states_restore_onto_another_gpu_count(monkeypatch, caplog, saved, devices, expected) -> None:
    cuda = FakeCuda(monkeypatch, devices)
    with caplog.at_level(logging.WARNING, logger="sage_cli.train.checkpoint"):
        ckpt.restore_cuda_rng_states(saved_states(saved), seed=7)
    assert cuda.calls == expected
    assert ("holds the CUDA RNG states" in caplog.text) == (saved != devices)


def test_restore_seeds_new_devices_with_the_run_seed(monkeypatch) -> None:
    torch.manual_seed(11)  # the run's seed, carried by the CPU state
    state = {**ckpt.collect_rng_state(), "cuda": saved_states(1)}
    expected_cpu = torch.get_rng_state()
    torch.manual_seed(5)
    cuda = FakeCuda(monkeypatch, devices=3)
    ckpt.restore_rng_state(state)
    assert cuda.calls == [("seed_all", 11), ("set", 10, 0)]
    assert torch.equal(torch.get_rng_state(), expected_cpu)


@pytest.mark.parametrize(("written", "world", "rank", "own"), [
    (2, 2, 1, True), (4, 2, 1, True), (2, 4, 1, True), (2, 4, 3, False), (0, 2, 1, False)])
def test_each_rank_takes_its_own_states_when_the_checkpoint_has_them(written, world, rank, own) -> None:
    state = {"rng": {"rank": 0}, "rng_ranks": [{"rank": r} for r in range(written)]}
    chosen = ckpt.select_rank_rng_state(state, rank, world)
    assert chosen == ({"rank": rank} if own else {"rank": 0})
