"""Fixtures for the model tests: the tiny open_clip model (random init) and class embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.backbone import load_clip
from sage_cli.config import cli_names

@pytest.fixture(autouse=True)
def errors_name_flags():
    """These tests read the model's errors as `sage train` shows them: options named by their flags."""
    with cli_names():
        yield


NUM_CLASSES = 10
EMBED_DIM = 64


def load_tiny_clip() -> nn.Module:
    """sage-tiny with random weights (seed 0): eval mode, everything frozen."""
    torch.manual_seed(0)
    return load_clip("sage-tiny", "none").model


@pytest.fixture
def tiny_clip() -> nn.Module:
    return load_tiny_clip()


@pytest.fixture
def class_embeddings() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return F.normalize(torch.randn(NUM_CLASSES, EMBED_DIM, generator=generator), dim=-1)


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(3, 3, 32, 32, generator=generator)
