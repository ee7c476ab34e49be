"""The report's figures drawn from hand-made report dicts: group bands, a lone eval point, value labels."""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
import pytest

from sage_cli.report.curves import plot_curves
from sage_cli.report.figures import RC, plot_per_class, plot_share, run_colour

COUNTS = [3, 6, 15, 40, 120]
GROUPS = ["few", "few", "few", "medium", "many"]  # by the thresholds many > 100, few < 20


def _report(groups: list[str] = GROUPS, thresholds: dict[str, int] | None = None, **run: Any) -> dict[str, Any]:
    metrics = {"per_class_accuracy": [0.5, 0.6, 0.7, 0.8, 0.9],
               "prediction_share": {g: {"predicted": p, "true": t} for g, p, t in
                                    (("many", 0.228, 0.238), ("medium", 0.35, 0.35), ("few", 0.422, 0.412))}}
    return {"dataset": {"classes": {"train_count": COUNTS, "group": groups, "name": list("abcde")},
                        "group_thresholds": thresholds if thresholds is not None else {"many": 100, "few": 20}},
            "runs": [{"name": "sage", "metrics": metrics, **run}]}


def _band_edges(fig: matplotlib.figure.Figure) -> dict[str, tuple[float, float]]:
    """group -> (left, right) of its shaded band, in data units."""
    edges = {}
    for patch in fig.axes[0].patches:
        gid = patch.get_gid() or ""
        if gid.startswith("band-"):
            xs = patch.get_patch_transform().transform(patch.get_path().vertices)[:, 0]
            edges[gid[5:]] = (float(xs.min()), float(xs.max()))
    return edges


def test_bands_meet_at_the_dataset_thresholds() -> None:
    with matplotlib.rc_context(RC):
        edges = _band_edges(plot_per_class(_report()))
    # the outer edges are the axis limits (smallest count / 1.3, largest x 1.3)
    assert edges == {"few": (pytest.approx(3 / 1.3), pytest.approx(20.0)),
                     "medium": (pytest.approx(20.0), pytest.approx(100.0)),
                     "many": (pytest.approx(100.0), pytest.approx(156.0))}


def test_bands_fall_back_to_midpoints_when_groups_do_not_follow_thresholds() -> None:
    groups = ["few", "few", "medium", "medium", "many"]  # 15 is medium here (groups from other counts)
    with matplotlib.rc_context(RC):
        edges = _band_edges(plot_per_class(_report(groups)))
    assert edges["few"][1] == pytest.approx((6 * 15) ** 0.5)
    assert edges["medium"] == (pytest.approx((6 * 15) ** 0.5), pytest.approx((40 * 120) ** 0.5))


def test_a_lone_eval_point_is_drawn_as_a_labelled_marker() -> None:
    history = {"train": [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)],
               "eval": [{"step": 3, "top1": 0.813, "few": 0.702, "split": "val"}]}
    with matplotlib.rc_context(RC):
        fig = plot_curves(_report(history=history), run_colour)
    val_ax = fig.axes[1]
    markers = {line.get_gid(): (list(line.get_xdata()), list(line.get_ydata()), line.get_marker())
               for line in val_ax.lines}
    assert markers["lone-eval-top1-0"] == ([3], [pytest.approx(81.3)], "o")
    assert markers["lone-eval-few-0"] == ([3], [pytest.approx(70.2)], "^")
    assert sorted(t.get_text() for t in val_ax.texts) == ["70.2", "81.3"]
    assert val_ax.get_title() == "final val eval only: top-1 ●, few ▲"
    assert val_ax.get_legend().get_texts()[0].get_text() == "sage"


def test_share_labels_sit_above_the_true_share_line() -> None:
    with matplotlib.rc_context(RC):
        fig = plot_share(_report())
    labels = [t for t in fig.axes[0].texts if t.get_gid() == "value-label"]
    # many: the bar (22.8) ends under the true share (23.8): its label starts at the line, not the bar
    assert [(t.get_text(), t.xy[1]) for t in labels] == [
        ("22.8", pytest.approx(23.8)), ("35.0", pytest.approx(35.0)), ("42.2", pytest.approx(42.2))]
    assert np.isclose(fig.axes[0].get_ylim()[0], 0)
