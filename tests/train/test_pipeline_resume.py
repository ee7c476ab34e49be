"""pipelines/_lib.sh: train_method resumes a killed run from the real checkpoint layout by itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "pipelines" / "_lib.sh"


def _train_method(work: Path) -> str:
    script = f'source "{LIB}"; DRY_RUN=1; WORK="{work}"; SAGE=sage; train_method sage preset.yaml'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(("layout", "flag"), [
    ({}, None),  # nothing yet: a fresh run
    ({"checkpoints/last.json": "{}", "checkpoints/step-00000004/state.pt": "", "metrics.jsonl": ""}, "--resume"),
    ({"checkpoints/step-00000004/state.pt": "", "metrics.jsonl": ""}, "--resume"),  # killed before last.json
    ({"metrics.jsonl": ""}, "--force"),  # killed before the first checkpoint: start over
    ({"checkpoints/last.json": "{}", "train.json": "{}", "adapter.safetensors": ""}, None),  # finished
])
def test_train_method_picks_resume_from_the_checkpoint_layout(tmp_path: Path, layout: dict[str, str],
                                                              flag: str | None) -> None:
    run_dir = tmp_path / "runs" / "sage"
    for name, text in layout.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(text)
    command = [line for line in _train_method(tmp_path).splitlines() if line.startswith("+ ")][0]
    assert "sage train" in command
    for other in ("--resume", "--force"):
        assert (other in command.split()) == (other == flag), command
