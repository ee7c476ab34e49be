"""Checkpoints of a run and loading a trained classifier back.

A checkpoint is a directory ``RUN_DIR/checkpoints/step-00000120/`` holding

- ``adapter.safetensors``: adapter + head weights only (never the frozen backbone), and
- ``best.safetensors`` under ``--keep best``: the weights of the best evaluation so far,
- ``checkpoint.json``: the sha256 of each file, verified before a resume or report reads them, and
- ``state.pt``: optimizer, scheduler (and, under fp16, GradScaler) and loss-module state (compensation statistics), the
  data-order position (epoch, step in epoch, global step) and every RNG state; plain tensors and
  Python values only, read back with ``torch.load(weights_only=True)``.

Both files are written into a temporary directory that is renamed into place, then
``checkpoints/last.json`` (atomic) names the newest; a kill at any moment leaves either the old
or the new checkpoint complete. Older checkpoints beyond ``keep`` are pruned afterwards.
"""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from sage_cli import artifacts
from sage_cli.errors import SageError
from sage_cli.train.faults import explain_write_errors

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST = "last.json"
WEIGHTS = "adapter.safetensors"
STATE = "state.pt"
MANIFEST = "checkpoint.json"
STATE_FORMAT = 1


@dataclass(frozen=True)
class Position:
    """Where the data order stands: ``step_in_epoch`` optimizer steps of ``epoch`` are done."""

    epoch: int
    step_in_epoch: int
    global_step: int


# --------------------------------------------------------------------------------------------
# Weights


def save_weights(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write ``tensors`` as safetensors (atomically), metadata values as JSON strings.

    The bytes are the same for the same tensors and metadata in any process, the file is as
    readable as any other output (umask), and a full disk is an OSError (ENOSPC) like every other
    write, for :func:`~sage_cli.train.faults.explain_write_errors` to name.
    """
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    artifacts.write_bytes_atomic(path, serialize_weights(tensors, meta))


def serialize_weights(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with a canonical header: metadata keys sorted, tensors in data order.

    safetensors keeps metadata in a hash map, so its header order (and the file's sha256) changes
    from process to process; the header is rebuilt here, the tensor data are left as written.
    """
    raw = save(tensors, metadata=metadata)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    meta = header.pop("__metadata__", None)
    ordered = dict(sorted(header.items(), key=lambda item: (item[1]["data_offsets"][0], item[0])))
    if meta:
        ordered = {"__metadata__": dict(sorted(meta.items())), **ordered}
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data start 8-byte aligned, as safetensors writes them
    return len(text).to_bytes(8, "little") + text + raw[8 + size:]


def describe_adapter_config(classifier: torch.nn.Module, method: str) -> dict[str, Any]:
    """The classifier's options as built, by flat key (for the weights' metadata): the bottleneck,
    blocks and token count that None left to their rules, resolved."""
    from sage_cli.model.surgery import ParallelAdapterMLP, get_vision_blocks
    from sage_cli.schema import flatten, jsonable

    resolved = {"method": method, **jsonable(flatten(classifier.config))}  # the ModelConfig it was built from
    summary = classifier.summary()
    blocks = [i for i, block in enumerate(get_vision_blocks(classifier.visual))
              if isinstance(getattr(block, "mlp", None), ParallelAdapterMLP)] if summary.get("adapter_blocks") else []
    if blocks:  # adapters in parallel to the MLPs (sage, lift); other PEFT modules keep the options' values
        resolved["blocks"] = blocks
        resolved["bottleneck"] = summary.get("bottleneck")
        resolved["guidance"] = summary.get("guidance_tokens") is not None
        resolved["guidance_tokens"] = summary.get("guidance_tokens")
    return resolved


def read_weights_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise SageError(f"{path}: not a readable safetensors checkpoint ({exc}); is it damaged?") from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file of adapter + head weights; a one-line SageError naming a bad file."""
    if not path.is_file():
        raise SageError(f"{path}: checkpoint not found")
    verify_checkpoint_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SageError(f"{path}: not a readable safetensors checkpoint ({exc}); is it damaged?") from None


# --------------------------------------------------------------------------------------------
# RNG state


def collect_rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python ``random`` states, as plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the states :func:`collect_rng_state` returned (CUDA ones by :func:`restore_cuda_rng_states`)."""
    torch.set_rng_state(state["torch"])
    restore_cuda_rng_states(state["cuda"], seed=torch.initial_seed())  # the CPU state carries the run's seed
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def select_rank_rng_state(state: dict[str, Any], rank: int, world_size: int) -> dict[str, Any]:
    """The RNG states rank ``rank`` of ``world_size`` resumes with, from a checkpoint's training state.

    Its own when the checkpoint has a rank of that number (written by any number of ranks), else
    rank 0's: at a fresh start every rank is seeded alike, so a rank new to the job starts as rank 0 did.
    """
    ranks = state.get("rng_ranks") or []
    if ranks and len(ranks) != world_size and rank == 0:
        extra = (f"ranks {len(ranks)}-{world_size - 1} take rank 0's RNG states" if world_size > len(ranks)
                 else f"the RNG states of ranks {world_size}-{len(ranks) - 1} are left unused")
        logger.warning("checkpoint written by %d rank(s), resumed by %d: %s", len(ranks), world_size, extra)
    return ranks[rank] if rank < len(ranks) else state["rng"]


def restore_cuda_rng_states(saved: list[torch.Tensor], seed: int) -> None:
    """Give this host's CUDA devices the ``saved`` states, whatever GPU count wrote them.

    Device i < min(len(saved), devices here) gets ``saved[i]``; a device beyond the saved ones is
    seeded with ``seed``, as ``torch.manual_seed(seed)`` seeds every device at a fresh start; saved
    states beyond this host's devices are dropped. A count that differs is logged: the resumed run
    then draws other random numbers on those devices than the uninterrupted one would have.
    """
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(saved) != present:
        logger.warning("checkpoint holds the CUDA RNG states of %d device(s), this host has %d: restoring the "
                       "first %d%s", len(saved), present, min(len(saved), present),
                       f", seeding devices {len(saved)}-{present - 1} with {seed}" if present > len(saved) else "")
    if present > len(saved):
        torch.cuda.manual_seed_all(seed)
    for device, device_state in enumerate(saved[:present]):
        torch.cuda.set_rng_state(device_state, device)


# --------------------------------------------------------------------------------------------
# Checkpoint directories


def checkpoint_name(global_step: int) -> str:
    return f"step-{global_step:08d}"


def save_checkpoint(
    run_dir: Path,
    weights: dict[str, torch.Tensor],
    state: dict[str, Any],
    position: Position,
    metadata: dict[str, Any],
    keep: int = 2,
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write one checkpoint directory atomically, point ``last.json`` at it, prune old ones.

    ``extra``: more weights files by name (the best evaluation's). A full or read-only disk is a
    SageError naming the checkpoint; the previous checkpoint stays the latest and intact.
    """
    root = run_dir / CHECKPOINT_DIR
    final = root / checkpoint_name(position.global_step)
    with explain_write_errors(final, "checkpoint"):
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
        try:
            tmp.chmod(0o777 & ~artifacts.current_umask())  # mkdtemp makes it private; a checkpoint is as readable as the run
            save_weights(tmp / WEIGHTS, weights, {**metadata, "global_step": position.global_step})
            for name, tensors in (extra or {}).items():
                save_weights(tmp / name, tensors, metadata)
            write_state(tmp / STATE, {"format": STATE_FORMAT, "position": vars(position),
                                      "torch_threads": torch.get_num_threads(), **state})
            write_manifest(tmp, position, tuple(extra or ()))
            artifacts.replace_directory(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        artifacts.write_json_atomic(root / LATEST, {"checkpoint": final.name, **vars(position)})
    prune_checkpoints(root, keep)
    return final


def write_state(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` to ``path`` atomically (fsynced, then renamed).

    Serialised in memory first: torch's own file writer reports a full disk as a RuntimeError
    from its C++ stream, without an errno; a plain write gives the OSError (ENOSPC) to explain.
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    artifacts.write_bytes_atomic(path, buffer.getvalue())


def write_manifest(directory: Path, position: Position, extra: tuple[str, ...] = ()) -> None:
    """``checkpoint.json``: the sha256 of the weights, the state and ``extra`` files, checked before a resume
    uses them."""
    files = {name: artifacts.sha256_file(directory / name) for name in (WEIGHTS, STATE, *extra)}
    artifacts.write_json_atomic(directory / MANIFEST, {"global_step": position.global_step, "files": files})


def verify_checkpoint_file(path: Path) -> None:
    """Refuse ``path`` (a checkpoint's weights or state) when its sha256 is not the one in its
    ``checkpoint.json``. Files outside a checkpoint directory, or of checkpoints written before
    sage recorded hashes, have no manifest and are not checked here."""
    manifest = path.parent / MANIFEST
    if not manifest.is_file() or not path.is_file():
        return
    try:
        expected = json.loads(manifest.read_text())["files"][path.name]
    except (OSError, ValueError, KeyError, TypeError):
        raise SageError(f"{manifest}: damaged checkpoint manifest; resume from another checkpoint or --force") from None
    if artifacts.sha256_file(path) != expected:
        raise SageError(
            f"{path}: content differs from the sha256 in {manifest} (damaged since it was written); delete "
            f"{path.parent} to resume from the checkpoint before it, or start over with --force"
        )


def prune_checkpoints(root: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints and any leftover temporary directories."""
    for leftover in root.glob(".step-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories under ``root``, oldest first."""
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / WEIGHTS).is_file() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def find_latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``last.json`` names, else the newest complete one, else None."""
    root = run_dir / CHECKPOINT_DIR
    try:
        name = json.loads((root / LATEST).read_text())["checkpoint"]
        if (root / name / WEIGHTS).is_file() and (root / name / STATE).is_file():
            return root / name
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = list_checkpoints(root) if root.is_dir() else []
    return found[-1] if found else None


def warn_if_threads_differ(state: dict[str, Any], checkpoint: Path) -> None:
    """CPU float sums depend on torch's thread count: a resume with another count is not bit for
    bit the uninterrupted run (it trains on, with last-bit differences)."""
    written = state.get("torch_threads")
    now = torch.get_num_threads()
    if written is not None and written != now:
        logger.warning("%s was written with %d torch thread(s), this process has %d: the resumed run will "
                       "not be bit-for-bit the uninterrupted one (set OMP_NUM_THREADS=%d to keep it)",
                       checkpoint, written, now, written)


def load_checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    """``state.pt`` of a checkpoint directory (tensors and plain values only)."""
    path = checkpoint / STATE
    if path.is_file():
        verify_checkpoint_file(path)
        verify_checkpoint_file(checkpoint / WEIGHTS)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SageError(f"{path}: checkpoint state not found") from None
    except Exception as exc:  # torch raises several types for damaged files
        raise SageError(f"{path}: not a readable checkpoint state ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise SageError(f"{path}: not a sage training state (format {STATE_FORMAT})")
    return state
