"""uint8 batches: the DataLoader's workers stop at uint8 pixels and the device normalises them.

A batch of 128 crops of 224 x 224 is 19 MB in uint8 against 77 MB in float32: a quarter to
collate, pin and copy to the GPU, and no float pass on the CPU workers. A transform that stops at
uint8 (:class:`UInt8Transform`: the geometric steps, crop / resize / flip, on the workers) carries
the :class:`Normalize` that finishes it; :func:`sage_cli.data.build_loader` sees it and wraps its
DataLoader in :class:`DeviceBatches`, which moves each batch's images to the device and normalises
them there with the very operations ToTensor + Normalize apply (x / 255, - mean, / std, in float32,
in that order): the same float tensors as the float path (bit for bit on a CPU; a GPU's division
may differ in the last bit). On CUDA the copy and the normalisation of the next batch run on a
side stream, one batch ahead, from pinned memory; on a CPU there is nothing to overlap.

The flip stays on the workers: it is a geometric step on uint8 already (a 150 KB copy, ~10 us an
image against ~1 ms for the crop and resize; benchmarks/speed), and moving it would mean carrying
a flag per image to the device for no measurable gain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch


class Normalize:
    """uint8 pixels [..., 3, H, W] -> float32 ``(x / 255 - mean) / std`` on the pixels' device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # [3, 1, 1]
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_on": {}}  # workers get the CPU constants only

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.device not in self._on:
            self._on[pixels.device] = (self.mean.to(pixels.device), self.std.to(pixels.device))
        mean, std = self._on[pixels.device]
        # ToTensor: float, / 255; Normalize: sub_(mean), div_(std). The same ops in the same order.
        return pixels.to(torch.float32).div_(255).sub_(mean).div_(std)  # one float32 allocation


def keep_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """The identity, as a module-level function (picklable for the workers)."""
    return pixels


class UInt8Transform:
    """A transform that stops at uint8 pixels: ``geometric`` (image -> uint8 [3, H, W]) runs on the
    workers, ``normalize`` on the device after collation (:class:`DeviceBatches`)."""

    def __init__(self, geometric: Callable[[Any], torch.Tensor], normalize: Normalize) -> None:
        self.geometric = geometric
        self.normalize = normalize

    def __call__(self, image: Any) -> torch.Tensor:
        return self.geometric(image)  # uint8 [3, H, W]

    def to_float(self, image: Any) -> torch.Tensor:
        """The whole transform on the CPU: float32 [3, H, W], as the float path gives it."""
        return self.normalize(self.geometric(image))


def device_normalizer(dataset: Any) -> Normalize | None:
    """The :class:`Normalize` that finishes ``dataset``'s samples, if its transform stops at uint8."""
    transform = getattr(dataset, "transform", None)
    return transform.normalize if isinstance(transform, UInt8Transform) else None


class DeviceBatches:
    """``loader``'s batches with their images on ``device``, normalised (labels stay where they are).

    Batches are ``(images or None, labels, ...)`` tuples or named tuples; an all-skipped batch
    (images None) passes as it is. On CUDA each batch is copied and normalised on a side stream as
    soon as the loader gives it, while the batch before it is being used; the compute stream waits
    for that batch's event only.
    """

    def __init__(self, loader: Iterable[Any], device: torch.device, normalize: Normalize) -> None:
        self.loader, self.device, self.normalize = loader, torch.device(device), normalize

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # the DataLoader's attributes (dataset, batch_sampler, ...)
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        if self.device.type == "cuda":
            yield from self.prefetch(iter(self.loader))
        else:
            for batch in self.loader:
                yield self.prepare(batch)

    def prepare(self, batch: Any) -> Any:
        """``batch`` with its images moved to the device and normalised (on the current stream)."""
        images = batch[0]
        if images is None:
            return batch
        images = self.normalize(images.to(self.device, non_blocking=True))  # [B, 3, H, W] float32
        return batch._replace(images=images) if hasattr(batch, "_replace") else (images, *batch[1:])

    def prefetch(self, batches: Iterator[Any]) -> Iterator[Any]:
        """CUDA: batch i + 1 is copied and normalised on a side stream while batch i is in use."""
        stream = torch.cuda.Stream(self.device)
        pending: tuple[Any, torch.cuda.Event] | None = None
        for batch in batches:
            with torch.cuda.stream(stream):
                ready = self.prepare(batch)
                event = torch.cuda.Event()
                event.record(stream)
            if pending is not None:
                yield self.hand_over(*pending)
            pending = (ready, event)
        if pending is not None:
            yield self.hand_over(*pending)

    def hand_over(self, batch: Any, event: torch.cuda.Event) -> Any:
        """Make the compute stream wait for ``batch``'s copy, and keep its memory until that stream is done."""
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)
        if batch[0] is not None:
            batch[0].record_stream(current)
        return batch
