"""What each rank of the 2-process gloo job in test_distributed.py runs: ``python gloo_ranks.py RANK STORE OUT``.

:func:`run_rank` joins a gloo group through a file store, runs every check's rank side and saves what
it saw to ``OUT/rank<R>.pt``; the test compares that with one process. The inputs are built from
fixed seeds here, so both sides build the same ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from sage_cli.data import BadSample
from sage_cli.losses import LossConfig, build_estimator
from sage_cli.train.distributed import DistContext, current_context
from sage_cli.train.evaluate import compute_sharded_image_features

WORLD = 2


# -- DDP: one step of two micro-batches; rank 1's share of the second is empty ----------------------------------

def ddp_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """A step of 5 images (x [5, 4], y [5]) in micro-batches of 4 and 1."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(5, 4, generator=generator), torch.randn(5, 3, generator=generator)


class StepLoss(nn.Module):
    """A frozen layer, then a trainable one ([B, 4] -> [B, 3]); ``forward`` returns the micro-batch's squared
    error weighted by its share of the step, as the Trainer weights the task's loss, and for an empty
    micro-batch a zero through every trainable parameter, as the task's ``empty_loss``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3))
        self.net[0].requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor, total: int) -> torch.Tensor:
        if not len(x):
            return torch.stack([p.sum() for p in self.parameters() if p.requires_grad]).sum() * 0.0
        return (self.net(x) - y).pow(2).sum(-1).mean() * (len(x) / total)


def ddp_rank(context: DistContext) -> dict[str, object]:
    x, y = ddp_inputs()
    module = StepLoss()
    model = context.wrap(module)
    micro_batches = [range(0, 4), range(4, 5)]
    for index, rows in enumerate(micro_batches):
        mine = list(rows)[context.rank::context.world_size]  # the sampler's strided share
        with context.gradient_sync(model, sync=index == len(micro_batches) - 1):
            model(x[mine], y[mine], 5).backward()
    return {"grads": {n: p.grad for n, p in module.named_parameters()},
            "ignored": sorted(getattr(model, "parameters_to_ignore", ())), "wrapped": type(model).__name__}


# -- compensation statistics: micro-batches split unevenly, one rank's share empty ----------------------------------

def compensation_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    labels = [torch.tensor([0, 1, 2, 0, 1]), torch.tensor([2, 2, 0]), torch.tensor([1, 0, 1, 2])]
    return [(torch.randn(len(y), 6, generator=generator), y) for y in labels]


def semantic_estimator():
    text = torch.nn.functional.normalize(torch.randn(3, 6, generator=torch.Generator().manual_seed(3)), dim=-1)
    return build_estimator("semantic", torch.tensor([4.0, 2.0, 1.0]), text,
                           LossConfig(compensation="semantic", lam=1.0, ema=0.5))


def rank_rows(count: int, rank: int) -> slice:
    """An uneven split: rank 0 the first 3 rows, rank 1 the rest (none of a 3-row batch)."""
    return slice(0, 3) if rank == 0 else slice(3, count)


def compensation_rank(context: DistContext) -> dict[str, object]:
    from sage_cli.collectives import all_gather_rows

    estimator = semantic_estimator()
    for features, labels in compensation_batches():
        rows = rank_rows(len(labels), context.rank)
        estimator.update(features[rows], labels[rows])
    gathered = all_gather_rows(torch.full((context.rank + 1, 2), float(context.rank)))
    return {"state": estimator.state_dict(), "delta": estimator.delta(), "gathered": gathered}


# -- the frozen-feature pass, sharded ------------------------------------------------------------------------------

class TinyImages(Dataset):
    """7 fixed 3x2x2 "images" with labels; sample 4 is unreadable (a BadSample, as with --skip-bad)."""

    def __init__(self) -> None:
        self.images = torch.randn(7, 3, 2, 2, generator=torch.Generator().manual_seed(4))

    def __len__(self) -> int:
        return 7

    def __getitem__(self, index: int):
        return BadSample(f"{index}.png", "unreadable") if index == 4 else (self.images[index], index % 3, index)


def tiny_tower() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5))


def frozen_features(context: DistContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, labels, head features) of the tiny tower over TinyImages, in batches of 2."""
    return tuple(compute_sharded_image_features(tiny_tower(), TinyImages(), 2, 0, torch.device("cpu"), context))


def run_rank(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        context = current_context()
        result = {"ddp": ddp_rank(context), "compensation": compensation_rank(context),
                  "frozen": frozen_features(context)}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run_rank(int(sys.argv[1]), sys.argv[2], sys.argv[3])
