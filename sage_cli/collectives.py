"""The collectives shared by the loss and the trainer: host integers on a gloo group, rows gathered over ranks.

Outside an initialised process group (a one-process run) every function here is the identity. Under
NCCL the row counts travel on a gloo group (:func:`host_group`), so gathering rows of a size the host
knows never waits for the GPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

_HOST_GROUP: list[Any] = []  # [default group, its gloo group]: created once per process group


def is_distributed() -> bool:
    """Whether this process is one rank of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def host_group() -> Any:
    """A gloo group over every rank, for host-side values: None (the default group) when that is gloo.

    Under another backend the group is created on the first call after the process group's set-up;
    creating it is collective, so every rank makes that first call at the same point
    (:func:`~sage_cli.train.distributed.current_context` does).
    """
    world = dist.group.WORLD
    if str(dist.get_backend()) == "gloo":
        return None
    if not _HOST_GROUP or _HOST_GROUP[0] is not world:
        _HOST_GROUP[:] = [world, dist.new_group(backend="gloo")]
    return _HOST_GROUP[1]


def all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` [B_r, ...] of every rank concatenated in rank order: [sum_r B_r, ...].

    B_r may differ from rank to rank, 0 included: the counts are gathered on :func:`host_group`,
    then the rows, padded to the largest count, in one all-gather. ``rows`` itself in one process.
    """
    if not is_distributed():
        return rows
    world = dist.get_world_size()
    counts = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([rows.shape[0]]), group=host_group())
    sizes = [int(count) for count in counts]
    largest = max(sizes)
    if largest == 0:
        return rows
    padded = rows.new_zeros((largest, *rows.shape[1:]))
    padded[:rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])
