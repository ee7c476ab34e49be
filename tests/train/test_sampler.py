"""Class-aware sampling: balanced, a pure function of (seed, epoch), resumable and split over ranks exactly."""

from __future__ import annotations

import numpy as np
import pytest

from sage_cli.data import StepBatchSampler, compute_class_aware_order

LABELS = np.array([0] * 40 + [1] * 8 + [2] * 2)  # 50 samples, imbalance 20


def test_class_aware_order_is_balanced_and_deterministic() -> None:
    labels = np.repeat(np.arange(4), [500, 100, 20, 5])  # 625 samples
    order, seeds = compute_class_aware_order(labels, seed=3, epoch=0)
    assert len(order) == len(labels) == len(seeds)
    drawn = np.bincount(labels[order], minlength=4)
    assert drawn.sum() == 625 and np.all(np.abs(drawn - 625 / 4) < 40), drawn  # ~156 each, not 500/100/20/5
    again, again_seeds = compute_class_aware_order(labels, seed=3, epoch=0)
    assert np.array_equal(order, again) and np.array_equal(seeds, again_seeds)
    other, _ = compute_class_aware_order(labels, seed=3, epoch=1)
    assert not np.array_equal(order, other)
    assert set(order[labels[order] == 3]) <= set(np.flatnonzero(labels == 3))  # draws are the class's own samples


@pytest.mark.parametrize("world", [2, 3])
def test_class_aware_steps_split_over_ranks_and_resume(world: int) -> None:
    single = StepBatchSampler(50, seed=1, batch_size=8, micro_batch_size=4, labels=LABELS)
    single.set_epoch(2)
    full = list(single)
    order, seeds = compute_class_aware_order(LABELS, 1, 2)
    assert [k for b in full for k in b] == list(zip(order.tolist(), seeds.tolist()))
    ranks = []
    for r in range(world):
        sampler = StepBatchSampler(50, seed=1, batch_size=8, micro_batch_size=4, rank=r, world_size=world, labels=LABELS)
        sampler.set_epoch(2)
        ranks.append(list(sampler))
    for index, batch in enumerate(full):
        assert [r[index] for r in ranks] == [batch[r::world] for r in range(world)]
    single.set_epoch(2, start_step=3)
    assert list(single) == full[6:]  # two micro-batches per step
