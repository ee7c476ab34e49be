"""benchmarks/methods/run_methods.py's records: RESULTS.md's order and labels, and the frontier table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("run_methods", ROOT / "benchmarks" / "methods" / "run_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", tmp_path)
    (tmp_path / "results").mkdir()
    return module


def _write(bench, name: str, text: str) -> None:
    (bench.HERE / "results" / name).write_text(text)


def test_results_put_today_s_world_first_and_label_the_earlier_ones(bench) -> None:
    for name in ("world-v1-test.md", "world-v2-default-test.md", "ir25-v0-test.md", "default-test.md",
                 "default-val.md"):
        _write(bench, name, f"<{name}>\n")
    bench.collect_results()
    text = (bench.HERE / "RESULTS.md").read_text()
    order = [text.index(f"<{n}>") for n in ("default-test.md", "ir25-v0-test.md", "world-v2-default-test.md",
                                             "world-v1-test.md")]
    assert order == sorted(order)
    assert "<default-val.md>" not in text  # val tables choose; they never enter RESULTS.md
    assert text.index("# World v2") < order[2] and "Measured before `lift` became LIFT-exact" in text
    assert order[1] < text.index("# World v2") and text.index("# World v1") < order[3]


def test_the_frontier_table_is_added_once_to_the_test_record(bench) -> None:
    _write(bench, "default-test.md", "## default\n\n| table |\n")
    interval = {"mean": 0.021, "ci_low": 0.004, "ci_high": 0.038}
    section = {"reference": "lift", "grid": [0.0], "paired": [
        {"group": "sage", "n": 5, "val_few_at_matched_many": interval, "val_overall_at_matched_many": None,
         "test_few": {"mean": -0.01, "ci_low": None, "ci_high": None}, "test_overall": interval, "test_many": interval}]}
    bench.add_frontier(section, "default")
    bench.add_frontier(json.loads(json.dumps(section)), "default")  # --rewrite adds it again: still one table
    text = (bench.HERE / "results" / "default-test.md").read_text()
    assert text.startswith("## default\n\n| table |\n\n" + bench.FRONTIER_TITLE)
    assert text.count(bench.FRONTIER_TITLE) == 1
    assert "| sage | 5 | +2.1 [+0.4, +3.8] | – | -1.0 | +2.1 [+0.4, +3.8] | +2.1 [+0.4, +3.8] |" in text


def test_a_world_variant_is_named_by_its_own_domain_s_ratio(bench) -> None:
    assert bench.world_tag({"imbalance_ratio": None, "variant": 0, "domain": "v3"}) == ""  # the default world
    assert bench.world_tag({"imbalance_ratio": None, "variant": 1, "domain": "v3"}) == "ir50-v1"  # v3's ratio is 50
    assert bench.world_tag({"imbalance_ratio": 25.0, "variant": 0, "domain": "v3"}) == "ir25-v0"
    assert bench.world_tag({"imbalance_ratio": None, "variant": 1}) == "ir100-v1"  # a record before v3: world v2's


@pytest.mark.parametrize("variant", [0, 1])
def test_descriptions_are_those_of_the_world_variant_s_looks(bench, tmp_path, monkeypatch, variant: int) -> None:
    import sage_cli.encode_text
    from sage_cli.world import SHAPES_DESCRIPTIONS_V3
    from sage_cli.world.shapes import describe_looks
    from sage_cli.world.shapes_lt import resolve_domain

    seen = []
    monkeypatch.setattr(sage_cli.encode_text, "run", lambda config: seen.append(config))
    bench.encode_variant(tmp_path / "out", "descriptions", bench.DemoConfig(out=tmp_path / "out"), variant)
    (config,) = seen
    described = json.loads(Path(config.descriptions).read_text())
    if variant == 0:
        assert Path(config.descriptions) == SHAPES_DESCRIPTIONS_V3  # the shipped file: variant 0's looks
    else:
        assert Path(config.descriptions).parent == tmp_path / "out"
        assert described != json.loads(SHAPES_DESCRIPTIONS_V3.read_text())
    looks = describe_looks(resolve_domain("v3", variant))  # each class's look words are in its sentences
    assert all(all(word in " ".join(sentences) for word in looks[i][0].split())
               for i, sentences in enumerate(described.values()))
