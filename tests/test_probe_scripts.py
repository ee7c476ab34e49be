"""benchmarks/methods/look_probe.py and mismatch_probe.py: the pieces a wrong figure would come from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from sage_cli.world.shapes import MODE_SIZES, class_modes, generate
from sage_cli.world.shapes_lt import _CHUNK, compute_class_order, compute_variant_seed, resolve_domain

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "methods" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replayed_looks_are_the_looks_the_captions_name() -> None:
    looks = _load("look_probe")
    labels = np.repeat(np.arange(80), 8)[: _CHUNK + 100]  # two chunks: the stream is followed across them
    replayed = looks.replay_looks(labels, "val")
    world = resolve_domain("v3")
    modes = class_modes(world)
    order = np.asarray(compute_class_order(compute_variant_seed("v3", 0)))
    rng = np.random.default_rng([0, 1])  # prepare_shapes_lt's val stream at seed 0
    captions = []
    for start in range(0, len(labels), _CHUNK):
        captions += generate(order[labels[start : start + _CHUNK]], rng, world).captions
    sizes, backgrounds = list(MODE_SIZES), {"gradient": "gradient", "stripes": "striped", "checkers": "checkered"}
    checked = 0
    for label, look, caption in zip(order[labels], replayed, captions):
        size = sizes[modes.size[label, look]]
        background = backgrounds[world.backgrounds[modes.background[label, look]]]
        if f" {size} " in f" {caption} ":
            checked += 1
        assert not any(f" {other} " in f" {caption} " for other in sizes if other != size), caption
        assert not any(word in caption for word in backgrounds.values() if word != background), caption
    assert checked > 50  # the size word is in enough captions for the check to mean something


def test_mismatch_tilt_leaves_head_classes_and_moves_tail_rows_toward_the_anchor() -> None:
    probe = _load("mismatch_probe")
    head = torch.eye(2)
    anchors = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    means = torch.eye(2)
    counts = torch.tensor([16e6, 16.0])  # r = [~1e-6, 0.5]
    tilted = probe.tilt(head, anchors, means, counts, g=2.0)
    assert torch.allclose(tilted[0], torch.tensor([1.0, 0.0]), atol=1e-5)  # head class: unchanged
    # tail: normalize(e_1 + 2 * 0.5 * (e_0 - e_1)) = normalize([1, 0]) = e_0
    assert torch.allclose(tilted[1], torch.tensor([1.0, 0.0]), atol=1e-6)


def test_fit_map_recovers_an_exact_linear_map_on_the_fitted_classes() -> None:
    probe = _load("mismatch_probe")
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(12, 3, generator=generator)
    truth = torch.randn(3, 4, generator=generator)
    means = anchors @ truth + 0.5
    fit_on = torch.tensor([True] * 9 + [False] * 3)
    mapped = probe.fit_map(anchors, means, fit_on, alpha=1e-6)
    assert torch.allclose(mapped, means, atol=1e-3)  # the held-out classes too: the map is exact
