"""Runs grouped across seeds: group keys, mean ± std rows, paired differences, LaTeX tables."""

from __future__ import annotations

import math

import pytest

from sage_cli.errors import SageError
from sage_cli.report import seeds, tex
from sage_cli.report.markdown import group_rows, paired_rows

T_975_2 = 4.30265272974946  # t_{0.975, 2}


def _entry(name: str, method: str, seed: int | None, top1: float, lr: float = 0.01) -> dict:
    """A report run entry as build_run_entry makes it, from a train.json-like config."""
    config = {"method": method, "config": {"run": {"seed": seed}},
              "inputs": {"prepare_fingerprint": "p",
                         "config": {"model": {"adapter": {"method": method}}, "optim": {"lr": lr}, "run": {"seed": seed}}}}
    kind = "run" if seed is not None else "zero-shot"
    metrics = {key: None for key in seeds.FIGURES}
    metrics.update(top1=top1, many=top1 + 0.1)
    return {"name": name, "kind": kind, "method": method, "seed": seed, "location": f"/runs/s{seed}/{name.split('/')[-1]}",
            "configuration": seeds.compute_configuration_key(config, kind), "metrics": metrics}


@pytest.fixture()
def entries() -> list[dict]:
    return [
        _entry("zero-shot", "zeroshot", None, 0.10),
        _entry("s0/lift", "lift", 0, 0.50), _entry("s0/sage", "sage", 0, 0.52),
        _entry("s1/lift", "lift", 1, 0.54), _entry("s1/sage", "sage", 1, 0.60),
        _entry("s2/lift", "lift", 2, 0.52), _entry("s2/sage", "sage", 2, 0.59),
        _entry("s0/sage-lr", "sage", 0, 0.40, lr=0.1),  # another configuration: its own group
    ]


def test_runs_differing_only_in_seed_share_a_group(entries: list[dict]) -> None:
    groups = seeds.assign_groups(entries)
    assert [g["name"] for g in groups] == ["zero-shot", "lift", "sage", "sage-lr"]
    assert groups[2]["runs"] == ["s0/sage", "s1/sage", "s2/sage"] and groups[2]["seeds"] == [0, 1, 2]
    assert [e["group"] for e in entries] == ["zero-shot", "lift", "sage", "lift", "sage", "lift", "sage", "sage-lr"]


def test_group_rows_mean_std_and_interval(entries: list[dict]) -> None:
    rows = seeds.compute_group_rows(seeds.assign_groups(entries), entries)
    sage = rows[2]
    assert sage["n"] == 3
    top1 = sage["metrics"]["top1"]
    assert top1["mean"] == pytest.approx(0.57, abs=1e-12)
    sd = math.sqrt(((0.52 - 0.57) ** 2 + (0.60 - 0.57) ** 2 + (0.59 - 0.57) ** 2) / 2)  # = sqrt(0.0019)
    assert top1["std"] == pytest.approx(sd, rel=1e-9)
    assert top1["ci_high"] - top1["mean"] == pytest.approx(T_975_2 * sd / math.sqrt(3), rel=1e-9)
    assert sage["metrics"]["few"] is None  # no run has it
    assert rows[0]["n"] == 1 and rows[0]["metrics"]["top1"]["std"] is None
    report = {"groups": rows}
    assert group_rows(report)[2][:3] == ["sage", "3", f"57.0 ± {100 * sd:.1f}"]
    assert group_rows(report)[0][:3] == ["zero-shot", "1", "10.0"]


def test_paired_differences_by_seed(entries: list[dict]) -> None:
    groups = seeds.assign_groups(entries)
    rows = {r["group"]: r for r in seeds.compute_paired_rows(groups, entries, "lift")}
    assert set(rows) == {"zero-shot", "sage", "sage-lr"}
    sage = rows["sage"]
    assert sage["seeds"] == [0, 1, 2] and sage["reference"] == "lift" and sage["unpaired_seeds"] == []
    d = [0.02, 0.06, 0.07]  # sage - lift per seed
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    top1 = sage["metrics"]["top1"]
    assert top1["mean"] == pytest.approx(mean, abs=1e-12) and top1["std"] == pytest.approx(sd, rel=1e-9)
    assert top1["ci_low"] == pytest.approx(mean - T_975_2 * sd / math.sqrt(3), rel=1e-9)
    # sage-lr has seed 0 only: one pair, no interval; seeds 1 and 2 of lift have no partner there.
    assert rows["sage-lr"]["n"] == 1 and rows["sage-lr"]["metrics"]["top1"]["mean"] == pytest.approx(-0.10)
    assert rows["sage-lr"]["metrics"]["top1"]["ci_low"] is None
    # The seedless zero-shot row is compared with every lift seed.
    assert rows["zero-shot"]["n"] == 3
    assert rows["zero-shot"]["metrics"]["top1"]["mean"] == pytest.approx(0.10 - 0.52, abs=1e-12)
    cells = paired_rows({"paired": list(rows.values())})
    lo, hi = 100 * top1["ci_low"], 100 * top1["ci_high"]
    assert [c for c in cells if c[0] == "sage"][0][:3] == ["sage", "3", f"+5.0 [{lo:+.1f}, {hi:+.1f}]"]


def test_reference_by_run_name_and_unknown_reference(entries: list[dict]) -> None:
    groups = seeds.assign_groups(entries)
    assert seeds.find_reference(groups, "s1/lift")["name"] == "lift"
    with pytest.raises(SageError, match=r"--reference nope: .*zero-shot, lift, sage, sage-lr"):
        seeds.compute_paired_rows(groups, entries, "nope")


def test_latex_tables_are_booktabs_and_escaped(entries: list[dict]) -> None:
    groups = seeds.assign_groups(entries)
    for e in entries:
        e["metrics"].update(top5=1.0, medium=0.5, few=0.25, ece=0.05)
    report = {
        "dataset": {"dataset": "tiny_lt", "num_samples": 12}, "split": "test", "versions": {"sage": "0"},
        "created": "now", "runs": entries, "reference": "lift",
        "groups": seeds.compute_group_rows(groups, entries),
        "paired": seeds.compute_paired_rows(groups, entries, "lift"),
    }
    text = tex.render_latex(report)
    assert text.count(r"\begin{tabular}") == 3 and text.count(r"\toprule") == 3 and text.count(r"\bottomrule") == 3
    assert r"\label{tab:sage-seeds}" in text and "tiny\\_lt" in text
    assert r"s0/sage & 52.0 & 100.0 & 62.0 & 50.0 & 25.0 & 5.0 \\" in text
    assert r"sage & 3 & 57.0 $\pm$ 4.4" in text
    assert r"sage & 3 & $+$5.0 [$-$1.6, $+$11.6]" in text  # 5.0 -+ 4.303 * 2.646 / sqrt(3)
    assert tex.escape_latex("a_b & 50% #1") == r"a\_b \& 50\% \#1"
