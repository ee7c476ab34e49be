"""The task module: classifier + loss behind forward(batch); the Trainer sees nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from sage_cli.losses import LossConfig, build_loss
from sage_cli.task import build_task
from sage_cli.methods import METHODS, model_config

COUNTS = torch.tensor([5.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_trainer_imports_neither_the_model_nor_the_losses() -> None:
    source = (Path(__file__).resolve().parents[2] / "sage_cli" / "train" / "loop.py").read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m and (m.startswith("sage_cli.model") or m.startswith("sage_cli.losses"))}


@pytest.mark.parametrize("method", ["sage", "lora"])
def test_forward_gives_the_loss_of_the_classifier_logits(tiny_clip, class_embeddings, images, method: str) -> None:
    loss = METHODS[method].loss  # the method's complete loss config
    task = build_task(tiny_clip, class_embeddings, COUNTS, model_config(method), loss, torch.device("cpu"))
    reference = build_loss(loss, COUNTS, class_embeddings).train()
    labels = torch.tensor([0, 3, 7])
    task.train()
    out = task((images, labels))
    logits, features = task.classifier.forward_with_features(images)
    assert out["samples"] == 3 and torch.equal(out["logits"], logits) and torch.equal(out["features"], features)
    torch.testing.assert_close(out["loss"], reference(logits, labels, features), rtol=0, atol=1e-6)
    assert task.loss.needs_features == (method == "sage")  # sage's semantic compensation reads the features


def test_an_empty_micro_batch_reaches_the_statistics_and_changes_nothing(tiny_clip, class_embeddings) -> None:
    task = build_task(tiny_clip, class_embeddings, COUNTS, model_config("sage"), METHODS["sage"].loss,
                      torch.device("cpu"))
    task.train()
    before = {k: v.clone() for k, v in task.loss.state_dict().items()}
    out = task((None, torch.zeros(0, dtype=torch.long)))
    assert out["samples"] == 0 and out["logits"] is None and float(out["loss"].detach()) == 0.0
    after = task.loss.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    out["loss"].backward()  # reaches every trainable parameter (DDP's all-reduce needs them all), with zeros
    assert all(p.grad is not None and not p.grad.any() for p in task.trainable_parameters())


@pytest.mark.parametrize("method", sorted(m for m in METHODS if m != "zeroshot"))
def test_every_trainable_parameter_gets_a_gradient_from_one_micro_batch(tiny_clip, class_embeddings, images,
                                                                         method: str) -> None:
    # DDP (find_unused_parameters off) all-reduces on the first backward that reaches every parameter
    zero_shot = (class_embeddings, torch.arange(10))  # frozen features of one image per class (sage-zs fits on them)
    task = build_task(tiny_clip, class_embeddings, COUNTS, model_config(method), METHODS[method].loss,
                      torch.device("cpu"), zero_shot_features=zero_shot)
    task.train()
    task((images, torch.tensor([0, 3, 7])))["loss"].backward()
    unused = [n for n, p in zip(task.classifier.trainable_names, task.trainable_parameters()) if p.grad is None]
    assert task.trainable_parameters() and unused == []


def test_trainable_parameters_are_exactly_the_saved_tensors(tiny_clip, class_embeddings) -> None:
    task = build_task(tiny_clip, class_embeddings, COUNTS, model_config("vpt-deep"), LossConfig(),
                      torch.device("cpu"))
    params = dict(task.classifier.named_parameters())
    saved = task.trainable_state_dict()
    assert [id(p) for p in task.trainable_parameters()] == [id(params[name]) for name in saved]
    assert {n for n, p in params.items() if p.requires_grad} == set(saved)
    assert task.num_trainable == sum(t.numel() for t in saved.values()) == 2 * 10 * 64 + 640
