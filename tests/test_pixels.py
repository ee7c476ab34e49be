"""uint8 batches normalised on the device (sage_cli.pixels) give the float path's tensors.

Tolerance: the device applies the very ops ToTensor + Normalize apply (float32 x / 255, - mean,
/ std, in that order), so on a CPU the tensors are equal; the tests allow 1e-6 (normalised units,
~3e-4 of a grey level) so that a GPU's division, which may round the last bit otherwise, passes too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from sage_cli.backbone import build_backbone
from sage_cli.data import ManifestDataset, MicroBatch, StepBatchSampler, build_loader, cpu_seeded, load_prepared_data
from sage_cli.pixels import DeviceBatches, Normalize, UInt8Transform
from sage_cli.train.transforms import build_train_transform, build_transforms, to_uint8_transform

TOLERANCE = 1e-6
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clip():
    return build_backbone("sage-tiny", "none", "cpu")


def _photo(seed: int, size: tuple[int, int] = (57, 43)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _lift_eval(record: dict) -> T.Compose:
    """LIFT's eval transform: Resize(res * 8 // 7) + CenterCrop(res), bilinear (issue 22's)."""
    res = record["image_size"][0]
    return T.Compose([T.Resize(res * 8 // 7, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(res),
                      T.ToTensor(), T.Normalize(record["mean"], record["std"])])


def test_normalize_is_to_tensor_then_normalize() -> None:
    """Hand-computed: grey levels 0, 51, 255 with mean 0.5, std 0.25 -> (x / 255 - 0.5) / 0.25."""
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    out = Normalize([0.5] * 3, [0.25] * 3)(pixels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([-2.0, -1.2, 2.0]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("which", ["train", "eval", "lift-eval"])
def test_uint8_transform_then_normalize_equals_the_float_transform(which: str, clip) -> None:
    float_tf = {"train": build_train_transform(clip.record), "eval": clip.preprocess_eval,
                "lift-eval": _lift_eval(clip.record)}[which]
    uint8_tf = to_uint8_transform(float_tf)
    assert isinstance(uint8_tf, UInt8Transform)
    for seed in range(6):  # the train transform: 6 crops and flips
        image = _photo(seed)
        with cpu_seeded(seed):
            expected = float_tf(image)
        with cpu_seeded(seed):
            pixels = uint8_tf(image)
        assert pixels.dtype == torch.uint8 and pixels.shape == expected.shape
        torch.testing.assert_close(uint8_tf.normalize(pixels), expected, rtol=0, atol=TOLERANCE)


def test_a_transform_not_ending_in_to_tensor_normalize_is_kept() -> None:
    other = T.Compose([T.ToTensor()])
    assert to_uint8_transform(other) is other


@pytest.mark.parametrize("augment", [True, False])
def test_loader_batches_of_the_uint8_path_equal_the_float_path(augment: bool, synthetic_prepared: Path, clip) -> None:
    """``sage train``'s transforms through build_loader (2 workers): float32 batches on the device,
    the float transforms' batches within the tolerance, for the train split (seeded crops) and val."""
    data = load_prepared_data(synthetic_prepared)
    train_tf, eval_tf = build_transforms(clip, augment)
    float_train = build_train_transform(clip.record) if augment else clip.preprocess_eval
    for split, uint8_tf, float_tf in (("train", train_tf, float_train), ("val", eval_tf, clip.preprocess_eval)):
        rows = data.split(split)

        def batches(transform, workers: int) -> list[MicroBatch]:
            dataset = ManifestDataset(rows, data.image_root, transform)
            sampler = StepBatchSampler(len(dataset), seed=4, batch_size=8, micro_batch_size=4)
            return list(build_loader(dataset, 4, workers, CPU, batch_sampler=sampler))

        fast, plain = batches(uint8_tf, 2), batches(float_tf, 0)
        # train: 45 images = 5 steps of 8 + one of 5, each cut into micro-batches of 4 -> 12; val: 8 -> 2
        assert len(fast) == len(plain) == {"train": 12, "val": 2}[split]
        for got, expected in zip(fast, plain):
            assert got.images.dtype == torch.float32 and got.images.device == CPU
            assert torch.equal(got.labels, expected.labels) and torch.equal(got.sample_ids, expected.sample_ids)
            torch.testing.assert_close(got.images, expected.images, rtol=0, atol=TOLERANCE)


def test_float_datasets_keep_a_plain_loader(synthetic_prepared: Path, clip) -> None:
    data = load_prepared_data(synthetic_prepared)
    dataset = ManifestDataset(data.split("val"), data.image_root, clip.preprocess_eval)
    assert isinstance(build_loader(dataset, 4, 0, CPU), DataLoader)


def test_an_all_skipped_batch_passes_through() -> None:
    empty = torch.zeros(0, dtype=torch.long)
    skipped = MicroBatch(None, empty, empty, ("a.jpg",))
    full = MicroBatch(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), torch.tensor([2]), torch.tensor([7]))
    out = list(DeviceBatches([skipped, full], CPU, Normalize([0.0] * 3, [1.0] * 3)))
    assert out[0] is skipped
    assert out[1].skipped == () and out[1].labels.tolist() == [2] and out[1].sample_ids.tolist() == [7]
    assert torch.equal(out[1].images, torch.ones(1, 3, 1, 1))


@pytest.mark.gpu
def test_cuda_prefetch_gives_the_cpu_path_tensors() -> None:
    """The side-stream prefetch: every batch, in order, on the GPU, equal to the CPU's normalisation."""
    cuda = torch.device("cuda")
    generator = torch.Generator().manual_seed(0)
    batches = [MicroBatch(torch.randint(0, 256, (16, 3, 64, 64), generator=generator, dtype=torch.uint8).pin_memory(),
                          torch.arange(16) + i, torch.arange(16)) for i in range(5)]
    normalize = Normalize([0.48, 0.46, 0.41], [0.27, 0.26, 0.28])
    out = []
    for batch in DeviceBatches(batches, cuda, normalize):
        out.append(batch.images * 2)  # work on the compute stream while the next batch copies
    torch.cuda.synchronize()
    for batch, got in zip(batches, out, strict=True):
        torch.testing.assert_close(got.cpu(), normalize(batch.images) * 2, rtol=0, atol=2 * TOLERANCE)
