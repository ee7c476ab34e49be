"""Evaluation loop, ranking ties, five-crop TTE and the predictions cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sage_cli import artifacts, metrics
from sage_cli.report.evaluate import evaluate_classifier, load_cached_predictions, save_predictions
from sage_cli.report.predictions import Predictions, compute_ranked_scores
from sage_cli.report.tte import build_five_crop_transform, build_tte_transform, compute_ensembled_logits

RECORD = {"image_size": [4, 4], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "interpolation": "nearest"}


def test_ranked_scores_follow_the_metric_tie_rule() -> None:
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, -1.0], [0.0] * 6])
    top, scores = compute_ranked_scores(logits, 5)
    expected, _ = metrics.compute_top_classes(logits.softmax(-1).numpy(), 5)
    assert top.tolist() == expected.tolist() == [[1, 2, 4, 0, 3], [0, 1, 2, 3, 4]]
    assert scores[1].tolist() == pytest.approx([1 / 6] * 5)


def test_five_crop_transform_shapes_and_corners() -> None:
    # 28 x 28 image (= 4 + 24): resize keeps it, crops are the 4 x 4 corners and centre.
    pixels = np.zeros((28, 28, 3), dtype=np.uint8)
    pixels[:4, :4] = 255  # top-left corner white
    pixels[12:16, 12:16] = 128  # centre grey
    crops = build_five_crop_transform(RECORD)(Image.fromarray(pixels))
    assert crops.shape == (5, 3, 4, 4)
    assert crops[0].min() == 1.0  # top-left
    assert crops[1].max() == 0.0 and crops[2].max() == 0.0 and crops[3].max() == 0.0
    assert crops[4].mean().item() == pytest.approx(128 / 255)


def test_ten_crop_adds_the_mirrors_and_expand_sets_the_resize() -> None:
    # 28 x 28 image, expand 24: the five 4 x 4 crops, then the five crops of the mirrored image (torchvision's
    # and LIFT's TenCrop): the mirrored image's top-left crop is the mirror of the top-right one, and so on.
    pixels = np.zeros((28, 28, 3), dtype=np.uint8)
    pixels[:4, :2] = 255  # the left half of the top-left corner
    views = build_tte_transform(RECORD, "ten-crop", 24)(Image.fromarray(pixels))
    assert views.shape == (10, 3, 4, 4)
    assert views[0, :, :, :2].min() == 1.0 and views[0, :, :, 2:].max() == 0.0  # top-left: left half white
    assert views[6, :, :, 2:].min() == 1.0 and views[6, :, :, :2].max() == 0.0  # its mirror: right half white
    assert views[5].max() == 0.0
    assert torch.equal(views[5:], views[[1, 0, 3, 2, 4]].flip(-1))  # a mirror is a pure permutation of pixels
    # expand 0 on a 4 x 4 image: no resize, every crop is the image itself.
    small = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    same = build_tte_transform(RECORD, "five-crop", 0)(Image.fromarray(small))
    assert all(torch.equal(view, same[0]) for view in same)
    # expand 4 on a 28 x 28 image: resize to 8 x 8 (nearest), crops of 4 from the corners of that.
    assert build_tte_transform(RECORD, "five-crop", 4)(Image.fromarray(pixels))[0].max() == 1.0


def test_flip_is_the_centre_crop_and_its_mirror() -> None:
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)  # 4 high, 6 wide: resize keeps it, the centre 4 x 4 crop
    pixels[:, 1] = 255  # column 1: the crop's column 0
    views = build_tte_transform(RECORD, "flip")(Image.fromarray(pixels))
    assert views.shape == (2, 3, 4, 4)
    assert views[0, :, :, 0].min() == 1.0 and views[0, :, :, 1:].max() == 0.0
    assert views[1, :, :, 3].min() == 1.0 and views[1, :, :, :3].max() == 0.0
    with pytest.raises(ValueError, match="unknown test-time ensembling mode 'six-crop'"):
        build_tte_transform(RECORD, "six-crop")


def test_ensembled_logits_average_the_crops() -> None:
    model = lambda x: x.flatten(1)[:, :2] * torch.tensor([1.0, 2.0])  # noqa: E731 - [N, 2]
    images = torch.arange(2 * 5 * 3 * 1 * 1, dtype=torch.float32).view(2, 5, 3, 1, 1)
    logits = compute_ensembled_logits(model, images)
    expected = (images[:, :, :2, 0, 0] * torch.tensor([1.0, 2.0])).mean(dim=1)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(compute_ensembled_logits(model, images[:, 0]), images[:, 0, :2, 0, 0] * torch.tensor([1.0, 2.0]))


class _Fixed(torch.nn.Module):
    """Returns logits stored per image (the first pixel holds the sample index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[images[:, 0, 0, 0].long()]


def test_evaluate_classifier_collects_in_order_and_reports_progress() -> None:
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 5.0, 0.0], [1.0, 1.0, 3.0]])
    images = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    batches = [(images[:2], torch.tensor([0, 2]), torch.tensor([10, 11])), (images[2:], torch.tensor([2]), torch.tensor([12]))]
    calls = []
    preds, stats = evaluate_classifier(_Fixed(logits), batches, torch.device("cpu"), 3, lambda *a: calls.append(a))
    assert preds.sample_ids.tolist() == [10, 11, 12] and preds.labels.tolist() == [0, 2, 2]
    assert preds.top1.tolist() == [0, 1, 2] and preds.top_classes.shape == (3, 3)
    assert preds.confidence[1] == pytest.approx(torch.softmax(logits[1], 0).max().item())
    assert calls == [("evaluate", 2, 3), ("evaluate", 3, 3)]
    assert stats.device == "cpu" and stats.precision == "fp32" and stats.images_per_second > 0


def test_cache_round_trip_and_fingerprint_check(tmp_path: Path) -> None:
    preds = Predictions(np.array([3, 4]), np.array([1, 0]), np.array([[1, 0], [1, 0]]),
                        np.array([[0.75, 0.25], [0.5, 0.5]], dtype=np.float32))
    record = artifacts.build_record("predictions", {"checkpoint_sha256": "abc", "tte": False})
    save_predictions(tmp_path, preds, record)
    loaded, rec = load_cached_predictions(tmp_path, record["fingerprint"])
    assert rec["inputs"]["checkpoint_sha256"] == "abc"
    for a, b in zip((preds.sample_ids, preds.labels, preds.top_classes, preds.top_scores),
                    (loaded.sample_ids, loaded.labels, loaded.top_classes, loaded.top_scores)):
        np.testing.assert_array_equal(a, b)
    assert load_cached_predictions(tmp_path, "other") is None
    (tmp_path / "predictions.parquet").write_bytes(b"garbage")  # damaged cache: ignored, re-evaluated
    assert load_cached_predictions(tmp_path, record["fingerprint"]) is None
