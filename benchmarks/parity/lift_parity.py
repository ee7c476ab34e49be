#!/usr/bin/env python
"""Parity of ``sage train --method lift`` with LIFT's own code, on one small random CLIP.

    python benchmarks/parity/lift_parity.py --lift-repo /path/to/LIFT [--threads 1] [--preset imagenet-lt]

LIFT (github.com/shijxcs/LIFT) is a checkout the user brings; nothing of it is copied here. Both
sides are built from the same OpenAI-format CLIP state dict (a random ViT: width 128, 2 blocks,
patch 16 at 64 px, embed 32; fp16-representable values, as OpenAI's released weights are):

- LIFT's side by LIFT's modules: ``clip.model.build_model``, ``models.PeftModelFromCLIP`` (Peft_ViT,
  ViT_Tuner with AdaptFormer, CosineClassifier), ``trainer.Trainer``'s ``build_data_loader`` (its
  transforms over a ``datasets.lt_data.LT_Dataset`` of our PNGs), ``build_optimizer``,
  ``build_criterion`` and ``init_head_text_feat``, with LIFT's config defaults (``utils/config.py``),
  ``configs/model/clip_vit_b16.yaml`` and ``adaptformer True`` (scripts/run_tab1to4_main_results.sh);
- ours by what ``sage train --method lift --config <preset>`` runs: ``sage prepare folder`` and
  ``sage encode-text --templates single`` (as the pipelines run it) on the same PNGs, then ``sage_cli.methods.resolve`` and
  ``sage_cli.train.core.build_trainer``, whose ``train_step`` takes the steps.

Compared (fp32, CPU; "differ" beyond 1e-5 relative to the larger magnitude of LIFT's tensor): the
eval transform of each PNG, the head's initial weight, the logits at init, the losses (LA, CE, CB,
GRW; each side's on LIFT's logits), the learning rate of each step, and every trainable tensor after
1 and after 10 SGD steps on the same batches. AdaptFormer's down-projection is drawn differently on
purpose (docs/methods.md): LIFT's initial adapter tensors are copied into ours before step 0, the
others are compared first. LIFT's training step is the fp32 branch of ``Trainer.train`` (forward,
criterion, backward, ``optim.step``, ``zero_grad``), which is inline in that loop.

LIFT imports packages the comparison does not use (yacs, sklearn, scipy; timm and tensorboard where
absent): those missing from this environment are stubbed in ``sys.modules``. The exit status is 1
and the table says "differ" on any mismatch; 2 with a one-line error on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOLERANCE = 1e-5  # relative, fp32 on CPU
LIFT_MODULES = ("clip/model.py", "models/peft_vit.py", "models/classifiers.py", "models/models.py",
                "utils/losses.py", "trainer.py", "datasets/lt_data.py")
# LIFT's top-level packages; another package of the same name imported first would shadow them.
LIFT_PACKAGES = ("clip", "models", "utils", "datasets", "trainer")
MODEL_NAME = "lift-parity-tiny"
TINY_CONFIG = {  # an OpenAI-layout ViT CLIP: LIFT's build_model infers heads = width // 64
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
# In sorted order of their folder names (spaces as "_"): `sage prepare folder` numbers classes so.
CLASS_NAMES = ("brambling", "cock", "electric ray", "goldfinch", "goldfish", "great white shark", "hammerhead",
               "hen", "house finch", "indigo bunting", "junco", "ostrich", "robin", "stingray", "tench",
               "tiger shark")
MAX_COUNT, IMBALANCE = 300, 30.0  # long-tailed train counts: 300 .. 10 images per class
VAL_PER_CLASS = 2
BATCH_SIZE = 128  # LIFT's and the presets' batch (no gradient accumulation: micro batch = batch)
STEPS = 10
SNAPSHOTS = (1, STEPS)  # trainable tensors compared after these many steps
# Our AdaptFormer name for each of LIFT's (per block); docs/methods.md: the down-projection's draw differs.
ADAPTER_ROLES = {"ln.weight": "norm.weight", "ln.bias": "norm.bias", "down_proj.weight": "down.weight",
                 "down_proj.bias": "down.bias", "up_proj.weight": "up.weight", "up_proj.bias": "up.bias",
                 "scale": "alpha"}
RANDOM_INIT_ROLES = ("down_proj.weight",)
# LIFT's options beyond its configs per benchmark (scripts/run_tab1to4_main_results.sh: `adaptformer True`
# for all, `num_epochs 20` for iNaturalist 2018), by the name of our preset.
LIFT_SCRIPT_OPTIONS = {"inat2018": {"num_epochs": 20}}
# Our --loss for each of LIFT's loss_type compared (LIFT's BS is not: its build_criterion has
# ``self.criterion == BalancedSoftmaxLoss(...)``, a comparison, so BS trains with no criterion set).
LOSSES = {"LA": "la", "CE": "ce", "CB": "cb", "GRW": "grw"}


class ParityError(Exception):
    """A one-line reason the comparison cannot run (bad arguments, an unusable LIFT checkout)."""


# ---------------------------------------------------------------------------------------------
# comparison and report (pure: tested in CI without LIFT)


@dataclass(frozen=True)
class Row:
    """One compared quantity: the largest absolute and relative difference, or why it cannot compare."""

    name: str
    max_abs: float
    max_rel: float
    note: str = ""
    moved: float | None = None  # after training steps: the largest change LIFT's steps made to the tensor
    update_rel: float | None = None  # max_abs / moved


    @property
    def ok(self) -> bool:
        return not self.note.startswith("shape") and self.max_rel <= TOLERANCE


def compare(name: str, ours: Any, lift: Any, lift_before: Any = None) -> Row:
    """``ours`` against ``lift`` (tensors, arrays or numbers): max |a - b| and that over max |lift|.

    The relative figure divides by the largest magnitude of LIFT's tensor (1 when that is 0), so a
    tensor of zeros compares absolutely. Different shapes are a mismatch, named in ``note``. With
    ``lift_before`` (the tensor before LIFT's steps) ``update_rel`` is max |a - b| over the largest
    change the steps made: shown, not judged (a weight near 1 moved by 1e-4 carries fp32 rounding of
    ~1e-3 of its change).
    """
    import torch

    a = torch.as_tensor(ours).detach().double().cpu()
    b = torch.as_tensor(lift).detach().double().cpu()
    if a.shape != b.shape:
        return Row(name, math.inf, math.inf, f"shape {list(a.shape)} vs LIFT's {list(b.shape)}")
    if a.numel() == 0:
        return Row(name, 0.0, 0.0)
    diff = (a - b).abs().max().item()
    scale = b.abs().max().item() or 1.0
    if lift_before is None:
        return Row(name, diff, diff / scale)
    moved = (b - torch.as_tensor(lift_before).detach().double().cpu().reshape(b.shape)).abs().max().item()
    update = diff / moved if moved else (0.0 if diff == 0 else math.inf)
    return Row(name, diff, diff / scale, moved=moved, update_rel=update)


def format_table(rows: Sequence[Row]) -> str:
    """A markdown table of the rows with a verdict column ("ok" / "differ")."""
    lines = ["| quantity | max abs diff | max rel diff | LIFT's change | diff / change | verdict |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        verdict = "ok" if row.ok else "differ"
        note = f" ({row.note})" if row.note else ""
        moved = "" if row.moved is None else f"{row.moved:.3g}"
        update = "" if row.update_rel is None else f"{row.update_rel:.3g}"
        lines.append(f"| {row.name} | {row.max_abs:.3g} | {row.max_rel:.3g} | {moved} | {update} | {verdict}{note} |")
    return "\n".join(lines)


def lift_to_ours(name: str) -> str:
    """Our trainable tensor's name for LIFT's (``tuner.adaptformer_list.3.ln.weight`` ->
    ``visual.transformer.resblocks.3.mlp.adapter.norm.weight``; ``head.weight`` is ``head.weight``)."""
    if name == "head.weight":
        return name
    match = re.fullmatch(r"tuner\.adaptformer_list\.(\d+)\.(.+)", name)
    if match is None or match.group(2) not in ADAPTER_ROLES:
        raise ParityError(f"LIFT tensor {name!r} has no counterpart in ours")
    return f"visual.transformer.resblocks.{match.group(1)}.mlp.adapter.{ADAPTER_ROLES[match.group(2)]}"


def check_lift_repo(path: str | os.PathLike[str]) -> Path:
    """The LIFT checkout ``path`` resolved; a ParityError naming the first missing module otherwise."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ParityError(f"--lift-repo {path}: not a directory (a checkout of github.com/shijxcs/LIFT)")
    for module in LIFT_MODULES:
        if not (root / module).is_file():
            raise ParityError(f"--lift-repo {path}: no {module}; is this a checkout of github.com/shijxcs/LIFT?")
    return root.resolve()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lift-repo", required=True, help="a checkout of github.com/shijxcs/LIFT")
    parser.add_argument("--preset", default="imagenet-lt", help="the sage preset whose options ours takes")
    parser.add_argument("--templates", default="single",
                        help="sage encode-text --templates, as the pipelines pass it (LIFT: one, 'a photo of a {}.')")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (printed)")
    parser.add_argument("--repeats", type=int, default=9, help="timed training steps of each side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lift-commit", default=None, help="LIFT's commit, when the checkout has no .git")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        raise ParityError("--threads and --repeats must be at least 1")
    args.lift_repo = check_lift_repo(args.lift_repo)
    return args


def describe_machine() -> str:
    """The CPU model (lscpu's "Model name") and core count."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} logical CPUs"


def lift_commit(root: Path) -> str:
    """The checkout's HEAD commit, or "unknown" (an exported tree has no .git)."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


# ---------------------------------------------------------------------------------------------
# the shared inputs: one CLIP state dict, long-tailed PNGs


def class_counts() -> list[int]:
    """Train images per class: MAX_COUNT down to MAX_COUNT / IMBALANCE, exponentially."""
    n = len(CLASS_NAMES)
    return [int(MAX_COUNT * IMBALANCE ** (-i / (n - 1))) for i in range(n)]


def make_state_dict(seed: int) -> dict[str, Any]:
    """An OpenAI-format CLIP state dict of :data:`TINY_CONFIG`: open_clip's random init plus noise
    (so no LayerNorm or bias is trivially 1 or 0), rounded to fp16 values as OpenAI's weights are
    (LIFT's ``build_model`` loads into fp16 parameters before ``float()``)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(TINY_CONFIG["embed_dim"], TINY_CONFIG["vision_cfg"], TINY_CONFIG["text_cfg"],
                                 quick_gelu=True)
    gen = torch.Generator().manual_seed(seed + 1)
    state = {}
    for key, value in model.state_dict().items():
        noisy = value if key == "logit_scale" else value + 0.02 * torch.randn(value.shape, generator=gen)
        state[key] = noisy.half().float()
    return state


def write_images(root: Path, seed: int) -> dict[str, list[tuple[str, int]]]:
    """Random RGB PNGs (80 x 60, not square, not the model's size) in ``root/<split>/<class>/``.

    Returns {split: [(relative path, label)]}.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    listing: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    counts = {"train": class_counts(), "val": [VAL_PER_CLASS] * len(CLASS_NAMES)}
    for split, per_class in counts.items():
        for label, (name, count) in enumerate(zip(CLASS_NAMES, per_class)):
            folder = root / split / name.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
                path = folder / f"{i:04d}.png"
                Image.fromarray(pixels).save(path)
                listing[split].append((str(path.relative_to(root)), label))
    return listing


# ---------------------------------------------------------------------------------------------
# LIFT's side, from its own modules


def _stub(name: str, **attrs: Any) -> None:
    """Put a module ``name`` (and its parents) into sys.modules unless it can be imported."""
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
            sys.modules[sub].__spec__ = importlib.machinery.ModuleSpec(sub, None)  # torch._dynamo checks specs
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
    for key, value in attrs.items():
        setattr(sys.modules[name], key, value)


class _CfgNode(dict):
    """yacs's CfgNode as LIFT uses it: a dict with attribute access (``utils/config.py`` only sets keys)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def _unused(name: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} is stubbed by lift_parity.py; the comparison does not use it")
    return refuse


def stub_unused_imports() -> None:
    """Stub the packages LIFT imports but the comparison never calls, where this environment lacks them."""
    _stub("yacs.config", CfgNode=_CfgNode)
    _stub("sklearn.linear_model", LogisticRegression=_unused("LogisticRegression"))
    _stub("sklearn.metrics", f1_score=_unused("f1_score"), confusion_matrix=_unused("confusion_matrix"))
    _stub("scipy.stats", hmean=_unused("hmean"), gmean=_unused("gmean"))
    _stub("scipy.sparse", coo_matrix=_unused("coo_matrix"))
    _stub("timm.models.vision_transformer", VisionTransformer=type("VisionTransformer", (), {}),
          vit_base_patch16_224=_unused("vit_base_patch16_224"), vit_base_patch16_384=_unused("vit_base_patch16_384"),
          vit_large_patch16_224=_unused("vit_large_patch16_224"))
    _stub("torch.utils.tensorboard", SummaryWriter=_unused("SummaryWriter"))


def import_lift(root: Path) -> types.SimpleNamespace:
    """LIFT's modules, imported from ``root``; a ParityError when another package shadows one."""
    stub_unused_imports()
    sys.path.insert(0, str(root))
    try:
        modules = {name: importlib.import_module(name) for name in
                   ("clip.clip", "clip.model", "models", "utils.config", "utils.losses", "datasets", "trainer")}
    finally:
        sys.path.remove(str(root))
    for name, module in modules.items():
        origin = Path(getattr(module, "__file__", "") or "").resolve()
        if root not in origin.parents:
            raise ParityError(f"LIFT's module {name} is shadowed by {origin}; run in a fresh interpreter")
    return types.SimpleNamespace(**{name.replace(".", "_"): module for name, module in modules.items()})


def lift_config(lift: types.SimpleNamespace, root: Path, dataset: str, preset: str) -> _CfgNode:
    """LIFT's config for ``python main.py -d <data> -m clip_vit_b16 adaptformer True [...]`` (the
    options its script gives the benchmark of ``preset``) at fp32 and our size."""
    import yaml

    cfg = _CfgNode(lift.utils_config._C)
    model_cfg = yaml.safe_load((root / "configs/model/clip_vit_b16.yaml").read_text())
    unknown = sorted(set(model_cfg) - set(cfg))
    if unknown:
        raise ParityError(f"LIFT's configs/model/clip_vit_b16.yaml sets unknown keys {unknown}")
    cfg.update({key: _decode_yacs(value) for key, value in model_cfg.items()})
    cfg.update(dataset=dataset, root="", adaptformer=True, prec="fp32", gpu=None, num_workers=0,
               resolution=TINY_CONFIG["vision_cfg"]["image_size"])
    cfg.update(LIFT_SCRIPT_OPTIONS.get(preset, {}))
    return cfg


def _decode_yacs(value: Any) -> Any:
    """A YAML value as yacs's ``merge_from_file`` decodes it: strings through ``literal_eval`` ("5e-4" -> 5e-4)."""
    import ast

    if isinstance(value, str):
        with contextlib.suppress(ValueError, SyntaxError):
            return ast.literal_eval(value)
    return value


def build_lift(lift: types.SimpleNamespace, root: Path, preset: str, state: dict[str, Any], images: Path,
               listing: dict[str, list[tuple[str, int]]], work: Path) -> Any:
    """LIFT's Trainer for our PNGs and state dict, built by its own ``build_data_loader`` / ``build_model``."""
    import torch

    names = [name.replace(" ", "_") for name in CLASS_NAMES]  # LIFT shows "_" as " " in prompts
    txt = {}
    for split, rows in listing.items():
        txt[split] = work / f"lift_{split}.txt"
        txt[split].write_text("".join(f"{path} {label}\n" for path, label in rows))

    class ParityImages(lift.datasets.LT_Dataset):  # like LIFT's ImageNet_LT: txt files + class names
        train_txt, test_txt = str(txt["train"]), str(txt["val"])

        def __init__(self, root: str, train: bool = True, transform: Any = None) -> None:
            super().__init__(str(images), train, transform)
            self.classnames = names

    lift.datasets.ParityImages = ParityImages
    lift.trainer.load_clip_to_cpu = lambda backbone, prec: _lift_clip(lift, state, prec)
    trainer = lift.trainer.Trainer.__new__(lift.trainer.Trainer)
    trainer.cfg = lift_config(lift, root, "ParityImages", preset)
    trainer.device = torch.device("cpu")
    with contextlib.redirect_stdout(sys.stderr):
        trainer.build_data_loader()
        trainer.build_model()
    return trainer


def _lift_clip(lift: types.SimpleNamespace, state: dict[str, Any], prec: str) -> Any:
    """What LIFT's ``load_clip_to_cpu`` returns for a state dict: ``build_model`` then ``float()`` (fp32/amp)."""
    model = lift.clip_model.build_model({k: v.clone() for k, v in state.items()})
    if prec in ("fp32", "amp"):
        model.float()
    return model


def lift_step(trainer: Any, images: Any, labels: Any) -> Any:
    """One step of LIFT's ``Trainer.train`` (its fp32 branch, no accumulation); the loss."""
    output = trainer.model(images)
    loss = trainer.criterion(output, labels)
    (loss / trainer.accum_step).backward()
    trainer.optim.step()
    trainer.optim.zero_grad()
    return loss.detach()


def lift_trainable(trainer: Any) -> dict[str, Any]:
    """LIFT's optimised tensors (tuner and head) by name, detached copies."""
    named = [(f"tuner.{n}", p) for n, p in trainer.tuner.named_parameters()]
    named += [(f"head.{n}", p) for n, p in trainer.head.named_parameters()]
    return {name: p.detach().clone() for name, p in named}


def lift_epoch_lrs(trainer: Any) -> list[float]:
    """The lr LIFT trains each epoch with: its CosineAnnealingLR, stepped once per epoch (on a copy)."""
    import torch

    params = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=trainer.cfg.lr, momentum=trainer.cfg.momentum)
    sched = type(trainer.sched)(opt, **{k: trainer.sched.state_dict()[k] for k in ("T_max", "eta_min")})
    lrs = []
    for _ in range(trainer.cfg.num_epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


# ---------------------------------------------------------------------------------------------
# our side, as `sage train --method lift --config <preset>` builds it


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Our stages' progress output and LIFT's prints go to stderr; the report keeps stdout."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def build_ours(preset: str, templates: str, state: dict[str, Any], images: Path, work: Path) -> tuple[Any, Any, Any]:
    """(Trainer, resolved TrainConfig, eval transform) of ``sage train --method lift --config preset``
    on the PNGs, after ``sage prepare folder`` and ``sage encode-text --templates templates``."""
    import open_clip
    import torch

    from sage_cli import encode_text, prepare
    from sage_cli.methods import load_preset, resolve
    from sage_cli.train.core import build_trainer
    from sage_cli.train.inputs import resolve_inputs

    configs = work / "model_configs"
    configs.mkdir(exist_ok=True)
    (configs / f"{MODEL_NAME}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(configs)
    weights = work / "clip_openai.pt"
    torch.save(state, weights)
    prepared, text, out = work / "prep", work / "text", work / "run"
    prepare.run(prepare.PrepareConfig(dataset="folder", root=images, out=prepared))
    encode_text.run(encode_text.EncodeTextConfig(prepared=prepared, out=text, model=MODEL_NAME,
                                                 pretrained=str(weights), templates=templates, device="cpu"))
    options = {**load_preset(preset), "prepared": prepared, "text_cache": text, "out": out, "device": "cpu",
               "num_workers": 0}
    options.pop("method", None)
    config = resolve("lift", options)
    inputs = resolve_inputs(config)
    trainer, _ = build_trainer(config, inputs, torch.device("cpu"), None, "parity")
    eval_transform = trainer.eval_loader.dataset.transform if trainer.eval_loader is not None else None
    return trainer, config, eval_transform


def build_our_loss(config: Any, loss: str, counts: Sequence[int], embeddings: Any) -> Any:
    """Our loss module for ``--loss loss`` over ``config`` (its tau and head scale), as train builds it."""
    import torch

    from sage_cli.losses import build_loss
    from sage_cli.methods import resolve

    required = {"prepared": config.data.prepared, "text_cache": config.data.text_cache, "out": config.run.out}
    loss_cfg = resolve("lift", {**required, "loss": loss, "tau": config.loss.tau}).loss
    return build_loss(loss_cfg, torch.tensor(counts, dtype=torch.float32), embeddings, config.model.head.scale)


def our_step(trainer: Any, images: Any, labels: Any) -> float:
    """One ``Trainer.train_step`` on one micro-batch; the lr it used."""
    import torch

    from sage_cli.data import MicroBatch

    batch = MicroBatch(images, labels, torch.arange(len(labels)))
    trainer.train_step([batch])
    return trainer._step_lr


# ---------------------------------------------------------------------------------------------
# the comparison


def lift_batches(trainer: Any, seed: int) -> list[tuple[Any, Any]]:
    """:data:`STEPS` batches of :data:`BATCH_SIZE` training images under LIFT's eval transform
    (deterministic, so both sides see the same pixels), in a seeded order."""
    import torch

    dataset = trainer.train_test_loader.dataset  # LIFT's train set under transform_test
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = []
    for step in range(STEPS):
        picked = order[step * BATCH_SIZE:(step + 1) * BATCH_SIZE]
        items = [dataset[i] for i in picked]
        images = torch.stack([image[0] for image, _ in items])  # LIFT's transform_test yields [1, 3, H, W]
        labels = torch.tensor([label for _, label in items])
        batches.append((images, labels))
    return batches


def compare_transforms(lift_trainer: Any, our_transform: Any, images: Path,
                       rows: list[tuple[str, int]]) -> Row:
    """LIFT's eval transform and ours on each validation PNG (the same file opened once per side)."""
    import torch
    from PIL import Image

    name = "eval transform (val PNGs, 80x60 -> 64x64)"
    if our_transform is None:
        return Row(name, math.inf, math.inf, "shape: ours has no eval transform")
    lift_transform = lift_trainer.test_loader.dataset.transform
    # Ours stops at uint8 pixels on the loader's workers and normalises on the device (sage_cli.pixels):
    # to_float runs both halves, as a batch reaches the model.
    our_transform = getattr(our_transform, "to_float", our_transform)
    ours, theirs = [], []
    for path, _ in rows:
        with Image.open(images / path) as image:
            rgb = image.convert("RGB")
        theirs.append(lift_transform(rgb)[0])  # [1, 3, H, W] -> [3, H, W]
        ours.append(our_transform(rgb))
    return compare(name, torch.stack(ours), torch.stack(theirs))


def _as_shape(ours: Any, lift: Any) -> Any:
    """``ours`` viewed in the shape of LIFT's tensor when they hold as many numbers (our alpha is a
    scalar, LIFT's scale has shape [1]); as it is otherwise, for :func:`compare` to name the misfit."""
    return ours.reshape(lift.shape) if ours.numel() == lift.numel() else ours


def time_steps(steps: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of ``repeats`` calls of each step, after one warm-up call of each; the steps
    alternate (round-robin), so load from other processes falls on both sides alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()
    for _ in range(repeats):
        for name, step in steps.items():
            tic = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(values) for name, values in times.items()}


def compare_init(lift_trainer: Any, classifier: Any) -> tuple[list[Row], list[str]]:
    """The head's text init and the deterministic adapter init; the randomly drawn adapter tensors
    (:data:`RANDOM_INIT_ROLES`) copied from LIFT into ours instead. Returns (rows, copied names)."""
    import torch

    lift_init = lift_trainable(lift_trainer)
    ours = dict(classifier.named_parameters())
    rows = [compare("head weight at init (text)", ours["head.weight"], lift_init["head.weight"])]
    copied = []
    with torch.no_grad():
        for name, value in lift_init.items():
            if name == "head.weight":
                continue
            mine = ours[lift_to_ours(name)]
            if ".".join(name.split(".")[-2:]) in RANDOM_INIT_ROLES:
                mine.copy_(value.reshape(mine.shape))
                copied.append(name)
            else:
                rows.append(compare(f"init {name}", _as_shape(mine, value), value))
    return rows, copied


def compare_training(lift_trainer: Any, ours: Any, batches: list[tuple[Any, Any]]) -> list[Row]:
    """:data:`STEPS` steps of each side on the same batches: every trainable tensor after the
    :data:`SNAPSHOTS` steps, the lr of each step and of the whole run."""
    before = lift_trainable(lift_trainer)
    classifier = ours.task.classifier
    rows, lift_lrs, our_lrs = [], [], []
    for step, (images, labels) in enumerate(batches, start=1):
        lift_lrs.append(lift_trainer.optim.param_groups[0]["lr"])
        lift_step(lift_trainer, images, labels)
        our_lrs.append(our_step(ours, images, labels))
        if step in SNAPSHOTS:
            mine = dict(classifier.named_parameters())
            for name, value in lift_trainable(lift_trainer).items():
                rows.append(compare(f"step {step}: {name}", _as_shape(mine[lift_to_ours(name)], value), value,
                                    before[name]))
    rows.append(compare(f"lr of steps 1..{STEPS}", our_lrs, lift_lrs))
    rows.append(compare_schedule(lift_trainer, ours))
    return rows


def run(args: argparse.Namespace) -> int:
    """Build both sides, compare, time, print the report; 1 when anything differs."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    lift = import_lift(args.lift_repo)
    with tempfile.TemporaryDirectory(prefix="lift_parity_") as tmp:
        work = Path(tmp)
        images = work / "images"
        listing = write_images(images, args.seed)
        state = make_state_dict(args.seed)
        with quiet():
            lt = build_lift(lift, args.lift_repo, args.preset, state, images, listing, work)
            ours, config, our_eval = build_ours(args.preset, args.templates, state, images, work)
        rows = [compare_transforms(lt, our_eval, images, listing["val"])]
        init_rows, copied = compare_init(lt, ours.task.classifier)
        rows += init_rows
        batches = lift_batches(lt, args.seed)
        images0, labels0 = batches[0]
        lt.tuner.train()
        ours.task.train()
        with torch.no_grad():
            lift_logits = lt.model(images0)
            rows.append(compare("logits at init", ours.task.classifier(images0), lift_logits))
        rows += compare_losses(lift, config, lt.cls_num_list, lift_logits, labels0)
        rows += compare_training(lt, ours, batches)
        seconds = time_steps({"ours": lambda: our_step(ours, images0, labels0),
                              "lift": lambda: lift_step(lt, images0, labels0)}, args.repeats)
    report = {
        "lift_commit": args.lift_commit or lift_commit(args.lift_repo), "machine": describe_machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "preset": args.preset, "templates": args.templates,
        "batch": BATCH_SIZE,
        "copied_from_lift": copied, "step_seconds": seconds, "ratio": seconds["ours"] / seconds["lift"],
        "rows": [row.__dict__ for row in rows], "differ": [row.name for row in rows if not row.ok],
    }
    print_report(report, rows, args.repeats)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["differ"] else 0


def print_report(report: dict[str, Any], rows: Sequence[Row], repeats: int) -> None:
    """The header (commit, machine, threads), the table, the step times and the verdict."""
    print(f"LIFT commit {report['lift_commit']}; {report['machine']}; torch {report['torch']}, "
          f"{report['threads']} thread(s); preset {report['preset']}; templates {report['templates']}; batch {report['batch']}; fp32 CPU; "
          f"tolerance {TOLERANCE:g} relative")
    print(f"copied from LIFT into ours before step 0 (init draws differ by design): "
          f"{', '.join(report['copied_from_lift'])}")
    print(format_table(rows))
    ours, lift = report["step_seconds"]["ours"], report["step_seconds"]["lift"]
    print(f"\ntraining step (batch {report['batch']}, median of {repeats}, alternating): ours {ours * 1e3:.2f} ms, "
          f"LIFT {lift * 1e3:.2f} ms, ours / LIFT = {report['ratio']:.3f}")
    failed = report["differ"]
    if failed:
        print(f"\ndiffer: {len(failed)} of {len(rows)} quantities beyond {TOLERANCE:g} relative: "
              + ", ".join(failed[:8]) + (" ..." if len(failed) > 8 else ""))
    else:
        print(f"\nall {len(rows)} quantities within {TOLERANCE:g} relative")


def compare_losses(lift: types.SimpleNamespace, config: Any, counts: Sequence[int], logits: Any,
                   labels: Any) -> list[Row]:
    """Each of :data:`LOSSES`, LIFT's class and ours on LIFT's logits: the value and its gradient."""
    import torch

    from sage_cli.errors import SageError

    cls_num_list = torch.Tensor(counts)
    lift_losses = {"LA": lift.utils_losses.LogitAdjustedLoss(cls_num_list=cls_num_list),
                   "CE": torch.nn.CrossEntropyLoss(),
                   "CB": lift.utils_losses.ClassBalancedLoss(cls_num_list=cls_num_list),
                   "GRW": lift.utils_losses.GeneralizedReweightLoss(cls_num_list=cls_num_list)}
    embeddings = _text_embeddings(config)
    rows = []
    for name, lift_loss in lift_losses.items():
        try:
            mine_fn = build_our_loss(config, LOSSES[name], counts, embeddings)
        except SageError as exc:  # a loss we lack: reported as a mismatch, the rest still compared
            rows.append(Row(f"loss {name}", math.inf, math.inf, f"shape: ours has no --loss {LOSSES[name]} ({exc})"))
            continue
        a = logits.detach().clone().requires_grad_(True)
        b = logits.detach().clone().requires_grad_(True)
        mine, theirs = mine_fn(a, labels, None), lift_loss(b, labels)
        mine.backward()
        theirs.backward()
        rows.append(compare(f"loss {name}", mine, theirs))
        rows.append(compare(f"loss {name} d/dlogits", a.grad, b.grad))
    return rows


def _text_embeddings(config: Any) -> Any:
    """The class embeddings [C, E] of the run's text cache (what our losses are built with)."""
    from sage_cli.encode_text.cache import load_text_cache

    return load_text_cache(config.data.text_cache).class_embeddings


def compare_schedule(lift_trainer: Any, ours: Any) -> Row:
    """The lr of every step of the run: LIFT's per-epoch cosine vs our scheduler's factor per step."""
    per_epoch = lift_epoch_lrs(lift_trainer)
    steps_per_epoch = ours.steps_per_epoch
    theirs = [lr for lr in per_epoch for _ in range(steps_per_epoch)][:ours.total_steps]
    base = ours.optimizer.param_groups[0]["initial_lr"]
    factor = ours.scheduler.lr_lambdas[0]
    mine = [base * factor(step) for step in range(ours.total_steps)]
    return compare(f"lr schedule, all {ours.total_steps} steps ({steps_per_epoch}/epoch)", mine, theirs)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        return run(args)
    except ParityError as exc:
        print(f"lift_parity.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
