"""Loading a trained run back for evaluation: its inputs found and verified, then the classifier.

A run's ``train.json`` names its prepared dataset and text cache by path (relative to the run
directory) and by content: the prepared dataset's fingerprint and the sha256 of its
``classes.parquet``, the text cache's fingerprint and the sha256 of its
``class_embeddings.parquet``. The content is the identity: :func:`locate_run_inputs` takes an
explicit ``--prepared`` / ``--text-cache``, the recorded place, or a directory beside the run
that holds the same content (a run copied together with its inputs), and refuses an input whose
content changed since training, naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from sage_cli import artifacts
from sage_cli.backbone import LoadedClip, build_backbone
from sage_cli.encode_text import check_text_cache_matches, load_text_cache
from sage_cli.errors import SageError
from sage_cli.model import SageClassifier, build_classifier
from sage_cli.train import checkpoint as ckpt
from sage_cli.train.config import read_config
from sage_cli.train.core import ADAPTER
from sage_cli.train.transforms import apply_preprocessing


class TrainedRun(NamedTuple):
    """A run rebuilt for evaluation; unpacks as ``classifier, clip, record, class_names``."""

    classifier: SageClassifier
    clip: LoadedClip
    record: dict[str, Any]
    class_names: tuple[str, ...]  # index = class id

    @property
    def precision(self) -> str:
        """The run's ``--precision`` (auto for runs before it): the autocast it is evaluated under."""
        return read_config(self.record).run.precision


@dataclass(frozen=True)
class InputKind:
    """How a run's record names one of its inputs and what identifies its content."""

    key: str  # in train.json's "inputs"
    record_name: str  # the stage record inside the input directory
    table: str  # the table whose sha256 train.json holds
    sha_key: str
    flag: str


PREPARED = InputKind("prepared", artifacts.PREPARE_RECORD, artifacts.CLASSES.filename, "classes_sha256", "--prepared")
TEXT_CACHE = InputKind("text_cache", artifacts.ENCODE_RECORD, artifacts.CLASS_EMBEDDINGS.filename,
                       "class_embeddings_sha256", "--text-cache")


def load_trained_classifier(
    run_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    text_cache: str | os.PathLike[str] | None = None,
) -> TrainedRun:
    """Rebuild a run's classifier in eval mode, with its class names.

    The backbone comes from the record's model / weights, the class embeddings from the run's text
    cache (``text_cache`` if given and it is that cache, else where train.json says, else found
    beside the run by its content), the weights from the file train.json's ``kept`` names
    (``adapter.safetensors``, or ``best.safetensors`` under ``--keep best``) or ``checkpoint`` (a
    ``.safetensors`` file or a checkpoint directory), which must be this run's.
    A missing, damaged or foreign file is a one-line SageError naming it.
    """
    run_dir = Path(run_dir)
    record = artifacts.read_record(run_dir, artifacts.TRAIN_RECORD)  # verifies adapter.safetensors' sha256
    weights_path = resolve_weights_path(run_dir, checkpoint, record)
    check_weights_belong(weights_path, record, run_dir)
    weights = ckpt.load_weights(weights_path)  # checked before the backbone is built
    cache = load_text_cache(locate_input(run_dir, record, TEXT_CACHE, text_cache))
    model = record.get("model", {})
    clip = build_backbone(model["model"], model["pretrained"], device)
    check_text_cache_matches(cache, clip.record)
    config = read_config(record, run_dir / artifacts.TRAIN_RECORD)
    clip = apply_preprocessing(clip, config.data.eval_resize, config.data.interpolation)  # the run's own
    classifier = build_classifier(clip.model, cache.class_embeddings, config.model)
    try:
        classifier.load_trainable_state_dict(weights)
    except SageError as exc:
        raise SageError(f"{weights_path}: {exc}") from None
    return TrainedRun(classifier.eval(), clip, record, cache.class_names)


def resolve_weights_path(run_dir: Path, checkpoint: str | os.PathLike[str] | None,
                         record: dict[str, Any] | None = None) -> Path:
    """``checkpoint`` (its weights file when it is a checkpoint directory), else the run's kept weights."""
    if checkpoint is None:
        return run_dir / kept_weights_name(record or {})
    path = Path(checkpoint)
    return path / ckpt.WEIGHTS if path.is_dir() else path


def check_weights_belong(path: Path, record: dict[str, Any], run_dir: Path) -> None:
    """Refuse weights that are not provably this run's: the run's own ``adapter.safetensors`` (its
    sha256 in train.json), or weights whose metadata carry the run's fingerprint. Weights of another
    run, or stripped of their metadata, would report other numbers under this run's name."""
    if not path.is_file():
        return  # a missing file is reported by the loader
    ckpt.verify_checkpoint_file(path)
    if is_recorded_adapter(path, record, run_dir):
        return
    fingerprint = ckpt.read_weights_metadata(path).get("fingerprint")
    if fingerprint is None:
        raise SageError(
            f"{path}: its metadata name no run (no fingerprint), so they cannot be shown to be weights of "
            f"{run_dir}; pass that run's adapter.safetensors or one of its checkpoints"
        )
    if fingerprint != record.get("fingerprint"):
        raise SageError(
            f"{path}: weights of another run (fingerprint {fingerprint[:12]}, {run_dir / artifacts.TRAIN_RECORD} "
            f"has {str(record.get('fingerprint'))[:12]}); restore this run's own file"
        )


def kept_weights_name(record: dict[str, Any]) -> str:
    """The weights file a run keeps for evaluation (train.json's ``kept``; runs before it: the last)."""
    kept = record.get("kept")
    return str(kept["file"]) if isinstance(kept, dict) and kept.get("file") else ADAPTER


def describe_weights(path: Path, record: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Which weights an evaluation of the run uses: the kept ones (train.json's ``kept``: keep, step,
    epoch, metric, value) or another file (``--checkpoint``: its step from its metadata)."""
    if path.resolve() == (run_dir / kept_weights_name(record)).resolve() and isinstance(record.get("kept"), dict):
        return {**record["kept"], "file": path.name}
    step = ckpt.read_weights_metadata(path).get("global_step") if path.is_file() else None
    return {"keep": "checkpoint", "file": str(path), "step": int(step) if step is not None else None}


def is_recorded_adapter(path: Path, record: dict[str, Any], run_dir: Path) -> bool:
    """Whether ``path`` is one of the run's own final weights files, with the sha256 its train.json records."""
    expected = (record.get(artifacts.FILES) or {}).get(path.name)
    return (expected is not None and path.resolve() == (run_dir / path.name).resolve()
            and artifacts.sha256_file(path) == expected)


# --------------------------------------------------------------------------------------------
# Finding a run's inputs by content


def locate_input(run_dir: Path, record: dict[str, Any], kind: InputKind,
                 override: str | os.PathLike[str] | None = None, strict: bool = True) -> Path:
    """The directory of the run's ``kind`` input whose content is the one the run was trained on.

    Tried in order: ``override``, the recorded path (relative to the run dir; absolute in runs of
    older sage), then the directories beside the run and beside its parent. The first whose
    record and table match the hashes in train.json wins; when none does, the refusal names the
    first candidate's differing file (or the missing input and the flag that supplies it). A
    ``strict`` override must match itself; otherwise it is only the first place looked at.
    """
    expected = record.get("inputs", {}).get(kind.key)
    if not isinstance(expected, dict) or "fingerprint" not in expected:
        raise SageError(f"{run_dir / artifacts.TRAIN_RECORD}: names no {kind.key}; was it written by sage train?")
    first_error: str | None = None
    for candidate in _candidates(run_dir, record, kind, override):
        problem = describe_mismatch(candidate, expected, kind, run_dir)
        if problem is None:
            return candidate
        if strict and override is not None and candidate == Path(override):
            raise SageError(problem)
        if first_error is None and (candidate / kind.record_name).is_file():
            first_error = problem
    if first_error is not None:
        raise SageError(first_error)
    raise SageError(f"{run_dir}: its {kind.key.replace('_', ' ')} (fingerprint {expected['fingerprint'][:12]}) is "
                    f"not where {artifacts.TRAIN_RECORD} says nor beside the run; pass {kind.flag} DIR")


def describe_mismatch(directory: Path, expected: dict[str, Any], kind: InputKind, run_dir: Path) -> str | None:
    """Why ``directory`` is not the run's input (one line naming the file), or None when it is."""
    record_path = directory / kind.record_name
    if not record_path.is_file():
        return f"{record_path}: missing; is {directory} the {kind.key.replace('_', ' ')} {run_dir.name} was trained on?"
    record = artifacts.read_record(directory, kind.record_name)  # damage is a SageError of its own
    train_json = run_dir / artifacts.TRAIN_RECORD
    if record.get("fingerprint") != expected["fingerprint"]:
        return (f"{record_path}: fingerprint {str(record.get('fingerprint'))[:12]} is not the "
                f"{expected['fingerprint'][:12]} {train_json} was trained on (re-made since?); pass {kind.flag} "
                "with the original")
    table = directory / kind.table
    wanted = expected.get(kind.sha_key)
    if wanted and (not table.is_file() or artifacts.sha256_file(table) != wanted):
        return (f"{table}: content differs from the sha256 in {train_json} (changed since the run was trained); "
                f"pass {kind.flag} with the original")
    return None


def _candidates(run_dir: Path, record: dict[str, Any], kind: InputKind,
                override: str | os.PathLike[str] | None) -> Iterator[Path]:
    seen: set[Path] = set()
    for path in _named_paths(run_dir, record, kind, override):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            yield path
    for base in (run_dir.resolve().parent, run_dir.resolve().parent.parent):
        try:
            children = sorted(p for p in base.iterdir() if p.is_dir())
        except OSError:
            continue
        for child in children:
            if child.resolve() not in seen and (child / kind.record_name).is_file():
                seen.add(child.resolve())
                yield child


def _named_paths(run_dir: Path, record: dict[str, Any], kind: InputKind,
                 override: str | os.PathLike[str] | None) -> Iterator[Path]:
    if override is not None:
        yield Path(override)
    for value in (record.get("inputs", {}).get(kind.key, {}).get("path"), record.get(kind.key)):
        if isinstance(value, str) and value:
            yield Path(os.path.normpath(run_dir / value))  # relative to the run dir; an absolute path stays itself


