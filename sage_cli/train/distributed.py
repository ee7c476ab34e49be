"""Data-parallel training under ``torchrun``: process-group setup and the few collectives a run needs.

``torchrun --nproc-per-node N -m sage_cli train ...`` (or multi-node torchrun) starts N processes
with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set; :func:`distributed_session` joins them into a
process group (NCCL on GPU, gloo on CPU) and puts each on ``cuda:LOCAL_RANK``.

Gradients are synchronised by :class:`~torch.nn.parallel.DistributedDataParallel`
(:meth:`DistContext.wrap`): bucketed all-reduces that overlap the backward pass, on the trainable
parameters only (the frozen tower and every buffer are left out: they are identical on every rank
by construction). Its hook sums the gradients instead of averaging them: each rank's loss is
already weighted by its share of the *global* step's normaliser, so the sum is the loss of the global batch.
Within a step of several micro-batches only the last one's backward all-reduces
(:meth:`DistContext.gradient_sync`); every rank runs that backward, an empty micro-batch through
a zero loss (:meth:`~sage_cli.task.ClassificationTask.empty_loss`). Outside torchrun every method
is a no-op and a run is one process, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sage_cli.backbone import resolve_device
from sage_cli.collectives import host_group
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

    def shard(self, count: int) -> range:
        """This rank's contiguous block of ``count`` items (all of them in one process); in rank order
        the blocks are ``range(count)``."""
        return range(count * self.rank // self.world_size, count * (self.rank + 1) // self.world_size)

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DDP, its gradients summed over ranks (``module`` itself outside torchrun).

        DDP owns the parameters that require a gradient; the others and every buffer are left out
        (not broadcast at the start, not in its buckets). Constructing it copies rank 0's trainable
        values to every rank.
        """
        if not self.enabled:
            return module
        ignored = [name for name, p in module.named_parameters() if not p.requires_grad]
        ignored += [name for name, _ in module.named_buffers()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
        # no device_ids: the module moves its own inputs; no find_unused_parameters: every trainable
        # parameter takes part in every forward (tests/model/test_task.py checks each method)
        model = DistributedDataParallel(module)
        model.register_comm_hook(None, sum_gradients)
        return model

    def gradient_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Around one micro-batch's forward and backward: DDP all-reduces only when ``sync`` (a step's
        last micro-batch); before it, gradients accumulate locally (``no_sync``)."""
        if sync or not isinstance(model, DistributedDataParallel):
            return contextlib.nullcontext()
        return model.no_sync()


def sum_gradients(group, bucket):  # noqa: ANN001, ANN201 (DDP reads the annotations; here they would be strings)
    """DDP communication hook: the bucket's gradients (a ``dist.GradBucket``) summed over the ranks of
    ``group``, as a future of the summed tensor (DDP's own hook averages them)."""
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


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
    return DistContext(dist.get_rank(), world, local_rank, backend, host_group())  # collective: every rank calls it
