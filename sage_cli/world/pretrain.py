"""Contrastive (CLIP InfoNCE) pretraining of the toy foundation model on the shapes world.

``run(PretrainConfig) -> PretrainResult`` trains an open_clip model built from the package's
``sage-toy`` config, from random init or from ``init`` weights, on an endless, balanced stream of
captioned images of one pretraining world (``clean``: world v1; ``open``: world v2, varied
backgrounds and attribute captions), and writes ``sage_toy.safetensors`` (float16 weights, loadable
with ``open_clip.create_model("sage-toy", pretrained=<file>)``) and a ``pretrain.json`` record with
the config, loss curve and zero-shot accuracy. Batch ``k`` is a pure function of ``(seed, k)`` and
torch runs with a fixed thread count, so a run is repeatable on the same machine; with
``checkpoint_every`` it saves its state as it goes and an interrupted run resumes where it stopped.

Also home of the zero-shot helpers used to measure the toy model on held-out clean and shifted images.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sage_cli.artifacts import build_record, guard_output_dir, sha256_file, write_bytes_atomic, write_record
from sage_cli.config import check_batch_size, check_seed
from sage_cli.errors import SageError
from sage_cli.world.shapes import (
    DOMAINS,
    NUM_CLASSES,
    ZERO_SHOT_TEMPLATE,
    Domain,
    balanced_labels,
    class_names,
    generate,
)

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
WEIGHTS_FILE = "sage_toy.safetensors"
PRETRAIN_RECORD = "pretrain.json"
CHECKPOINT_FILE = "checkpoint.pt"
# Pretraining world -> the domain its images come from, and the domains its zero-shot is measured on.
WORLDS: dict[str, str] = {"clean": "clean", "open": "open"}
EVAL_DOMAINS: dict[str, tuple[str, ...]] = {
    "clean": ("clean", "shifted"),
    "open": ("open", "moderate", "cast-only", "texture-only", "clean", "shifted"),
}
_TRAIN_STREAM, _EVAL_STREAM = 0, 1  # seed-sequence branches: training batches never meet eval images


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of one toy pretraining run (flags of ``sage pretrain-toy``)."""

    out: Path
    steps: int = 4000
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    model: str = "sage-toy"
    threads: int = 2
    device: str = "cpu"
    eval_per_class: int = 20
    log_every: int = 100
    force: bool = False
    world: str = "clean"
    init: Path | None = None  # weights to start from (None: random init)
    checkpoint_every: int = 0  # steps between resumable checkpoints (0: none)

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise SageError(f"--world must be one of {', '.join(WORLDS)}, got {self.world!r}")
        if self.init is not None and not Path(self.init).is_file():
            raise SageError(f"--init {self.init}: no such weights file")
        if self.checkpoint_every < 0:
            raise SageError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.steps < 1:
            raise SageError(f"--steps must be at least 1, got {self.steps}")
        check_batch_size("--batch-size", self.batch_size, minimum=2)  # contrastive pairs
        check_seed("--seed", self.seed)
        if self.lr <= 0:
            raise SageError(f"--lr must be positive, got {self.lr}")
        if self.eval_per_class < 0:
            raise SageError(f"--eval-per-class must be >= 0, got {self.eval_per_class}")
        if self.threads < 1:
            raise SageError(f"--threads must be at least 1, got {self.threads}")


@dataclass(frozen=True)
class PretrainResult:
    """Where the weights went, the loss curve and the zero-shot accuracy (in %) per domain."""

    weights: Path
    record: Path
    losses: list[float]
    zero_shot: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: bool = False


def register_model_configs() -> None:
    """Make the package's model configs (``sage-toy`` ...) known to open_clip."""
    try:
        import sage_cli.backbone  # noqa: F401  (registers every JSON in model_configs/ on import)
    except ModuleNotFoundError:
        import open_clip

        if "sage-toy" not in open_clip.list_models():
            open_clip.add_model_config(MODEL_CONFIG_DIR)


def build_toy_model(model: str = "sage-toy", weights: Path | None = None) -> tuple[torch.nn.Module, Callable]:
    """An open_clip model (random init, or ``weights``) and its tokenizer."""
    import open_clip

    register_model_configs()
    clip = open_clip.create_model(model, pretrained=str(weights) if weights else None)
    return clip, open_clip.get_tokenizer(model)


def images_to_tensor(images: np.ndarray, clip: torch.nn.Module) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, 3, H, W]``, exactly as open_clip's eval transform."""
    cfg = clip.visual.preprocess_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    return (x - mean) / std


def compute_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (image, caption) pairs; features L2-normalised ``[B, D]``."""
    logits = logit_scale * image_features @ text_features.T  # [B, B]
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def compute_lr(step: int, config: PretrainConfig) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))


def build_optimizer(clip: torch.nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on gains, biases, embeddings and the logit scale (as open_clip_train)."""
    decay, no_decay = [], []
    for name, p in clip.named_parameters():
        exclude = p.ndim < 2 or "embedding" in name or "logit_scale" in name or "token" in name
        (no_decay if exclude else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def train_step(clip: torch.nn.Module, tokenizer: Callable, optimizer: torch.optim.Optimizer, step: int,
               config: PretrainConfig) -> float:
    """One AdamW step on batch ``step`` of the balanced stream of ``config.world``; returns the loss."""
    rng = np.random.default_rng([config.seed, _TRAIN_STREAM, step])
    labels = rng.integers(0, NUM_CLASSES, size=config.batch_size)
    batch = generate(labels, rng, DOMAINS[WORLDS[config.world]])
    images = images_to_tensor(batch.images, clip).to(config.device)
    texts = tokenizer(batch.captions).to(config.device)
    for group in optimizer.param_groups:
        group["lr"] = compute_lr(step, config)
    image_features = F.normalize(clip.encode_image(images), dim=-1)
    text_features = F.normalize(clip.encode_text(texts), dim=-1)
    loss = compute_clip_loss(image_features, text_features, clip.logit_scale.exp())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        clip.logit_scale.clamp_(0, math.log(100))
    return float(loss.detach())


@torch.no_grad()
def encode_class_prompts(clip: torch.nn.Module, tokenizer: Callable, names: Sequence[str],
                         template: str = ZERO_SHOT_TEMPLATE, device: str = "cpu") -> torch.Tensor:
    """L2-normalised text embeddings ``[C, D]`` of ``template.format(name)`` for each class name."""
    texts = tokenizer([template.format(name) for name in names]).to(device)
    return F.normalize(clip.encode_text(texts), dim=-1)


@torch.no_grad()
def compute_zero_shot_accuracy(clip: torch.nn.Module, tokenizer: Callable, images: np.ndarray,
                               labels: np.ndarray, names: Sequence[str], device: str = "cpu",
                               batch_size: int = 512) -> float:
    """Top-1 zero-shot accuracy (in %) of uint8 ``images`` against prompts for ``names``."""
    was_training = clip.training
    clip.eval()
    classifier = encode_class_prompts(clip, tokenizer, names, device=device)  # [C, D]
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = images_to_tensor(images[start : start + batch_size], clip).to(device)
        features = F.normalize(clip.encode_image(x), dim=-1)  # [B, D]
        predicted = (features @ classifier.T).argmax(dim=-1).cpu().numpy()
        correct += int((predicted == labels[start : start + batch_size]).sum())
    clip.train(was_training)
    return 100.0 * correct / max(1, len(labels))


def evaluate_world_zero_shot(clip: torch.nn.Module, tokenizer: Callable, domain: Domain, per_class: int = 20,
                             seed: int = 0, device: str = "cpu") -> float:
    """Zero-shot top-1 (%) over all world classes on ``per_class`` held-out images each from ``domain``."""
    domain_index = list(DOMAINS).index(domain.name) if domain.name in DOMAINS else 99
    rng = np.random.default_rng([seed, _EVAL_STREAM, domain_index])
    labels = balanced_labels(per_class, rng)
    batch = generate(labels, rng, domain)
    return compute_zero_shot_accuracy(clip, tokenizer, batch.images, batch.labels, class_names(), device)


def save_weights(clip: torch.nn.Module, path: Path) -> None:
    """Write the model's state dict as float16 safetensors (atomically)."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in clip.state_dict().items()}
    write_bytes_atomic(path, save(state, metadata={"format": "pt", "model": "sage-toy"}))


def _fingerprint_inputs(config: PretrainConfig) -> dict[str, Any]:
    inputs = asdict(config)
    for key in ("out", "force", "log_every", "device", "checkpoint_every"):
        inputs.pop(key)
    if config.world == "clean" and config.init is None:  # world v1's inputs, as its shipped record holds them
        inputs.pop("world")
        inputs.pop("init")
    if config.init is not None:  # the weights started from, by content, not by where they lie
        inputs["init"] = {"sha256": sha256_file(Path(config.init))}
    return inputs


def run(config: PretrainConfig, progress: Callable[[int, float], None] | None = None) -> PretrainResult:
    """Pretrain the toy CLIP, save float16 weights, measure zero-shot accuracy of the saved weights."""
    out = Path(config.out)
    inputs = _fingerprint_inputs(config)
    fingerprint = build_record("pretrain", inputs)["fingerprint"]
    if guard_output_dir(out, PRETRAIN_RECORD, fingerprint, (WEIGHTS_FILE,), config.force):
        log.info("%s already holds this pretraining run; skipping", out)
        return PretrainResult(out / WEIGHTS_FILE, out / PRETRAIN_RECORD, [], skipped=True)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    clip, tokenizer = build_toy_model(config.model, config.init)
    clip.to(config.device).train()
    optimizer = build_optimizer(clip, config)
    losses, seconds = _resume(out / CHECKPOINT_FILE, fingerprint, clip, optimizer, config)
    start = time.perf_counter() - seconds
    for step in range(len(losses), config.steps):
        losses.append(train_step(clip, tokenizer, optimizer, step, config))
        if progress is not None:
            progress(step + 1, losses[-1])
        if (step + 1) % config.log_every == 0:
            log.info("step %d/%d loss %.4f", step + 1, config.steps, float(np.mean(losses[-config.log_every :])))
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            _save_checkpoint(out / CHECKPOINT_FILE, fingerprint, clip, optimizer, losses,
                             time.perf_counter() - start)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    save_weights(clip, out / WEIGHTS_FILE)
    zero_shot = _evaluate_saved(out / WEIGHTS_FILE, config)
    record = build_record(
        "pretrain", inputs, weights=WEIGHTS_FILE, weights_sha256=sha256_file(out / WEIGHTS_FILE),
        zero_shot_top1=zero_shot, train_seconds=round(seconds, 1), final_loss=float(np.mean(losses[-50:])),
        loss_every_100=[round(float(np.mean(losses[i : i + 100])), 4) for i in range(0, len(losses), 100)],
    )
    record_path = write_record(out, PRETRAIN_RECORD, record)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return PretrainResult(out / WEIGHTS_FILE, record_path, losses, zero_shot, seconds)


def _save_checkpoint(path: Path, fingerprint: str, clip: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     losses: list[float], seconds: float) -> None:
    """Model and optimizer state (float32), the losses so far and the time spent, written atomically."""
    import io

    buffer = io.BytesIO()
    torch.save({"fingerprint": fingerprint, "model": clip.state_dict(), "optimizer": optimizer.state_dict(),
                "losses": losses, "seconds": seconds}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())


def _resume(path: Path, fingerprint: str, clip: torch.nn.Module, optimizer: torch.optim.Optimizer,
            config: PretrainConfig) -> tuple[list[float], float]:
    """Restore a checkpoint of this same run into ``clip`` / ``optimizer``: (losses so far, seconds spent)."""
    if not path.is_file():
        return [], 0.0
    state = torch.load(path, map_location=config.device, weights_only=True)
    if state.get("fingerprint") != fingerprint:
        if not config.force:
            raise SageError(f"{path}: a checkpoint of another pretraining run; choose another --out or pass --force")
        return [], 0.0
    clip.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming from %s at step %d", path, len(state["losses"]))
    return list(state["losses"]), float(state["seconds"])


def _evaluate_saved(weights: Path, config: PretrainConfig) -> dict[str, float]:
    """Zero-shot accuracy (%) of the weights as saved (float16 round trip) on the world's eval domains."""
    if config.eval_per_class == 0:
        return {}
    clip, tokenizer = build_toy_model(config.model, weights)
    clip.to(config.device).eval()
    return {
        name: round(evaluate_world_zero_shot(clip, tokenizer, domain, config.eval_per_class, config.seed,
                                             config.device), 2)
        for name, domain in ((name, DOMAINS[name]) for name in EVAL_DOMAINS[config.world])
    }
