"""Opening image files under PIL's guard against decompression bombs, in sage's words.

PIL warns (``DecompressionBombWarning``, two raw lines with no file name) about an image over
``Image.MAX_IMAGE_PIXELS`` (89 Mpx by default) and refuses one over twice that (178 Mpx) with an
exception no command expects. :func:`open_image` turns the first into one warning naming the file
(once per file) and the second into a :class:`SageError` naming it; the CLI silences PIL's own
warning (:func:`silence_pil_size_warning`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Iterator

from PIL import Image

from sage_cli.errors import SageError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def open_image(path: str | os.PathLike[str]) -> Iterator[Image.Image]:
    """``Image.open(path)`` as a context; other failures raise as PIL raises them (OSError...)."""
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise SageError(f"{path}: cannot read image ({exc})") from None
    with image:
        limit = Image.MAX_IMAGE_PIXELS
        if limit and image.width * image.height > limit:
            _warn_large_image(str(path), image.width, image.height, limit)
        yield image


@functools.lru_cache(maxsize=None)
def _warn_large_image(path: str, width: int, height: int, limit: int) -> None:
    logger.warning("%s: a %dx%d image (%.0f Mpx), over PIL's decompression-bomb warning size (%.0f Mpx); "
                   "read all the same", path, width, height, width * height / 1e6, limit / 1e6)


def silence_pil_size_warning() -> None:
    """Drop PIL's raw DecompressionBombWarning: :func:`open_image` reports the file in one line instead."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
