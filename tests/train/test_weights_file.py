"""adapter.safetensors files: the same bytes for the same weights in any process, readable mode,
the metadata intact."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sage_cli.train import checkpoint as ckpt

WRITE = """
import sys, torch
from pathlib import Path
from sage_cli.train.checkpoint import save_weights
g = torch.Generator().manual_seed(0)
tensors = {f"adapter.{i}.weight": torch.randn(3, 5, generator=g) for i in range(4)} | {"head.weight": torch.ones(2, 5)}
metadata = {f"key{i}": {"value": i, "nested": [i, "x"]} for i in range(8)} | {"method": "sage"}
save_weights(Path(sys.argv[1]), tensors, metadata)
"""


def test_the_same_weights_give_the_same_file_in_every_process(tmp_path: Path) -> None:
    digests = set()
    for k in range(3):  # safetensors' hash map ordered the metadata differently in each process
        path = tmp_path / f"w{k}.safetensors"
        subprocess.run([sys.executable, "-c", WRITE, str(path)], check=True, timeout=120)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    tensors = load_file(str(tmp_path / "w0.safetensors"))
    g = torch.Generator().manual_seed(0)
    expected = {f"adapter.{i}.weight": torch.randn(3, 5, generator=g) for i in range(4)}
    assert sorted(tensors) == sorted([*expected, "head.weight"])
    for name, value in expected.items():
        assert torch.equal(tensors[name], value)
    with safe_open(str(tmp_path / "w0.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["key3"]) == {"value": 3, "nested": [3, "x"]} and metadata["method"] == "sage"


def test_weights_files_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        ckpt.save_weights(tmp_path / "a.safetensors", {"w": torch.zeros(2)}, {"method": "linear"})
    finally:
        os.umask(previous)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644  # safetensors wrote 0600
