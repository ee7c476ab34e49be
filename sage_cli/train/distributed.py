"""Data-parallel training under ``torchrun``: process-group setup and the few collectives a run needs.

``torchrun --nproc-per-node N -m sage_cli train ...`` (or multi-node torchrun) starts N processes
with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set; :func:`distributed_session` joins them into a
process group (NCCL on GPU, gloo on CPU) and puts each on ``cuda:LOCAL_RANK``. There is no DDP
wrapper: only adapters and head train, so after the backward passes of a step
:meth:`DistContext.all_reduce_grads` sums their gradients in one flat all-reduce (each rank's loss
is already weighted by its share of the *global* batch, so the sum is the mean over the global
batch). Outside torchrun every method is a no-op and a run is one process, as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from sage_cli.backbone import resolve_device
from sage_cli.errors import SageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; ``world_size`` 1 means a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    # a gloo group for small host-side agreements (counts, flags, objects): no GPU sync under NCCL
    control_group: Any = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes metrics, checkpoints, weights and train.json."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place (returned for chaining)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def min_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return tensor

    def sum_host(self, values: Sequence[int]) -> list[int]:
        """Element-wise sums of small host integers over ranks (through the gloo control group)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.long)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.control_group)
        return tensor.tolist()

    def sum_host_floats(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums of small host numbers over ranks, in float64 (integers below 2^53 stay exact)."""
        if not self.enabled:
            return [float(v) for v in values]
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.control_group)
        return tensor.tolist()

    def all_true(self, ok: bool) -> bool:
        """True when ``ok`` holds on every rank (a barrier, too)."""
        return self.sum_host([int(not ok)])[0] == 0

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (picklable values)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control_group)
        return out

    def broadcast_params(self, params: Sequence[torch.Tensor]) -> None:
        """Copy rank 0's values of ``params`` to every rank (they start identical; this makes sure)."""
        if self.enabled:
            for p in params:
                dist.broadcast(p.data, src=0)

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over ranks in one flat all-reduce.

        A rank whose micro-batches were all empty has no gradients: it sends zeros. A parameter
        that got no gradient on any rank keeps ``grad = None`` (as in a single process, where
        SGD then leaves it alone).
        """
        if not self.enabled:
            return
        present = self.sum_host([int(p.grad is not None) for p in params])  # host-side: no GPU sync
        device = params[0].device
        flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=device)
                          for p in params])
        self.sum_(flat)
        offset = 0
        for p, count in zip(params, present):
            numel = p.numel()
            p.grad = flat[offset:offset + numel].view_as(p).to(p.dtype) if count else None
            offset += numel


def read_torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's environment, or None outside a multi-process job."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    try:
        return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise SageError("WORLD_SIZE is set but RANK is not; start distributed runs with torchrun") from None


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job (their front end stays quiet)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    env = read_torchrun_env()
    return env is None or env[0] == 0


def choose_device(option: str, local_rank: int) -> torch.device:
    """``--device`` for one rank: CUDA ranks use ``cuda:LOCAL_RANK``; cpu stays cpu."""
    device = resolve_device(option)
    if device.type != "cuda":
        return device
    if device.index is not None and device.index != local_rank:
        logger.warning("--device %s ignored under torchrun: rank uses cuda:%d (LOCAL_RANK)", option, local_rank)
    if local_rank >= torch.cuda.device_count():
        raise SageError(f"LOCAL_RANK {local_rank}: only {torch.cuda.device_count()} CUDA devices on this node")
    return torch.device("cuda", local_rank)


@contextmanager
def distributed_session(device_option: str) -> Iterator[tuple[DistContext, torch.device]]:
    """The job's :class:`DistContext` and this rank's device.

    Joins (and at the end leaves) the process group when started by torchrun; uses a group the
    caller already initialised as it is; otherwise a single process on ``device_option``.
    """
    if dist.is_available() and dist.is_initialized():
        context = current_context()
        yield context, choose_device(device_option, context.local_rank) if context.enabled else resolve_device(device_option)
        return
    env = read_torchrun_env()
    if env is None:
        yield DistContext(), resolve_device(device_option)
        return
    rank, world, local_rank = env
    device = choose_device(device_option, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    logger.info("rank %d of %d (local %d) on %s, backend %s", rank, world, local_rank, device, backend)
    try:
        yield current_context(), device
    finally:
        dist.destroy_process_group()


def current_context() -> DistContext:
    """The context of an already initialised process group (with its gloo control group)."""
    world = dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    if world <= 1:
        return DistContext(dist.get_rank(), 1, local_rank)
    backend = str(dist.get_backend())
    control = None if backend == "gloo" else dist.new_group(backend="gloo")  # collective: every rank calls it
    return DistContext(dist.get_rank(), world, local_rank, backend, control)
