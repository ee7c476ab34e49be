"""Every ```python block of README.md and docs/*.md runs, against tiny data made in tmp_path.

A file's blocks run in order in one namespace (a later block may use an earlier one's names), in a
directory holding what the docs' paths name: ``runs/prep`` and ``runs/syn/prep`` (a prepared
dataset), ``runs/text`` and ``runs/syn/text`` (its sage-tiny text cache, random weights: offline)
and ``photo.jpg``. A block that cannot run here (real weights, a dataset, the network) is marked on
the line before its fence, visibly and with the reason: ``<!-- docs-test: skip (needs ...) -->``.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*$")
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->\s*$")
MIN_RUNNABLE = 5  # the blocks that run today: fewer means a block or the parser went missing


@dataclass(frozen=True)
class CodeBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the reason it does not run here; None: it runs


def find_code_blocks(path: Path) -> list[CodeBlock]:
    """The ```python blocks of a Markdown file (list-indented ones dedented), with their skip marker."""
    lines = path.read_text().splitlines()
    blocks, n = [], 0
    while n < len(lines):
        fence = FENCE.match(lines[n])
        if fence is None:
            n += 1
            continue
        end = next(i for i in range(n + 1, len(lines)) if lines[i].strip() == "```")
        before = next((lines[i] for i in range(n - 1, -1, -1) if lines[i].strip()), "")
        marker = SKIP.match(before)
        code = textwrap.dedent("\n".join(lines[n + 1:end]))
        blocks.append(CodeBlock(path, n + 1, code, marker["reason"].strip() if marker else None))
        n = end + 1
    return blocks


def raw_fence_count(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip() == "```python")


DOCS_WITH_CODE = [p for p in DOCS if raw_fence_count(p)]


@pytest.fixture()
def docs_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_prepared: Path,
                   synthetic_text_cache: Path) -> Path:
    """tmp_path with the inputs the docs' examples name, as the working directory."""
    from sage_cli.model import peft

    for runs in (tmp_path / "runs", tmp_path / "runs" / "syn"):
        runs.mkdir(parents=True, exist_ok=True)
        (runs / "prep").symlink_to(synthetic_prepared)
        (runs / "text").symlink_to(synthetic_text_cache)
    pixels = np.random.default_rng(0).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(peft, "PEFT_MODULES", dict(peft.PEFT_MODULES))  # a block registering a module leaves no trace
    return tmp_path


@pytest.mark.parametrize("path", DOCS_WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_blocks_run(path: Path, docs_workspace: Path) -> None:
    found = find_code_blocks(path)
    assert len(found) == raw_fence_count(path)
    blocks = [b for b in found if b.skip is None]
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    ran = 0
    for block in blocks:
        where = f"{path.relative_to(ROOT)}:{block.line}"
        try:
            exec(compile(block.code, where, "exec", dont_inherit=True), namespace)  # not this file's __future__
        except Exception as exc:
            pytest.fail(f"{where}: the example raised {type(exc).__name__}: {exc}")
        ran += 1
    assert ran == len(blocks)


def test_every_block_is_found_and_runs_or_says_why_not() -> None:
    blocks = [b for path in DOCS for b in find_code_blocks(path)]
    assert len(blocks) == sum(raw_fence_count(p) for p in DOCS)  # the parser misses none
    skipped = [b for b in blocks if b.skip is not None]
    assert all(len(b.skip) >= 10 for b in skipped), [(str(b.path), b.line) for b in skipped]  # a reason, not a word
    assert len(blocks) - len(skipped) >= MIN_RUNNABLE


def test_a_skip_marker_needs_a_reason_and_sits_right_before_its_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- docs-test: skip (downloads the ViT-B-16 weights) -->\n```python\nimport x\n```\n\n"
                    "- item\n\n   ```python\n   y = 1\n   ```\n")
    first, second = find_code_blocks(page)
    assert (first.line, first.code, first.skip) == (4, "import x", "downloads the ViT-B-16 weights")
    assert (second.line, second.code, second.skip) == (10, "y = 1", None)
