"""--save-logits (full float16 logits per run) and --tau (post-hoc logit adjustment from them)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sage_cli.report import ReportConfig, run
from sage_cli.report.logits import (
    LOGITS,
    compute_adjusted_logits,
    compute_adjusted_predictions,
    compute_class_prior,
    load_logits,
)


def test_adjusted_logits_by_hand() -> None:
    logits = np.array([[2.0, 1.0], [0.5, 0.4]], dtype=np.float16)
    prior = compute_class_prior(np.array([80, 20]))
    np.testing.assert_allclose(prior, [0.8, 0.2])
    adjusted = compute_adjusted_logits(logits, prior, tau=1.0)
    # 2 - log 0.8 = 2.2231, 1 - log 0.2 = 2.6094; 0.5 + 0.2231 = 0.7231, 0.4 + 1.6094 = 2.0094
    np.testing.assert_allclose(adjusted, [[2.2231436, 2.6094379], [0.7231436, 2.0094379]], atol=1e-3)
    predictions = compute_adjusted_predictions(logits, np.array([7, 9]), np.array([0, 1]), prior, tau=1.0)
    assert predictions.top1.tolist() == [1, 1]  # both flip to the rare class
    assert predictions.sample_ids.tolist() == [7, 9]
    e = math.exp(2.6094379 - 2.2231436)
    assert predictions.top_scores[0, 0] == pytest.approx(e / (1 + e), abs=1e-3)
    unadjusted = compute_adjusted_predictions(logits, np.array([7, 9]), np.array([0, 1]), prior, tau=0.0)
    assert unadjusted.top1.tolist() == [0, 0]
    # tau = 0.5: row 2 is 0.5 + 0.1116 = 0.6116 vs 0.4 + 0.8047 = 1.2047 -> class 1; row 1 2.1116 vs 1.8047 -> 0
    half = compute_adjusted_predictions(logits, np.array([7, 9]), np.array([0, 1]), prior, tau=0.5)
    assert half.top1.tolist() == [0, 1]


def test_save_logits_and_tau_rows(tiny_data, tmp_path: Path) -> None:
    prepared, text = tiny_data
    base = dict(zero_shot=prepared, text_cache=text, device="cpu", figures=False)
    first = run(ReportConfig(out=tmp_path / "a", save_logits=True, **base))
    cache = tmp_path / "a" / "zero-shot"
    saved = load_logits(cache, __import__("json").loads((cache / "predictions.json").read_text())["fingerprint"])
    assert saved is not None
    logits, sample_ids, labels = saved
    assert logits.dtype == np.float16 and logits.shape == (12, 4)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    m = first.report["runs"][0]["metrics"]
    assert m["top1"] == pytest.approx((logits.astype(np.float32).argmax(1) == labels).mean())

    # --tau re-scores from the saved logits: no evaluation, one extra row per tau.
    second = run(ReportConfig(out=tmp_path / "a", tau=(1.0, 2.0), force=True, **base))
    assert second.evaluated == ()
    names = [r["name"] for r in second.report["runs"]]
    assert names == ["zero-shot", "zero-shot τ=1", "zero-shot τ=2"]
    prior = np.array([150, 40, 30, 5]) / 225
    for entry, tau in zip(second.report["runs"][1:], (1.0, 2.0)):
        expected = (logits.astype(np.float32) - tau * np.log(prior)[None, :]).argmax(1)
        assert entry["metrics"]["top1"] == pytest.approx((expected == labels).mean())
        assert entry["metrics"]["few"] == pytest.approx((expected[labels == 3] == 3).mean())
        assert entry["posthoc_tau"] == tau and entry["group"] == f"zero-shot τ={tau:g}"
    share = second.report["runs"][2]["metrics"]["prediction_share"]["few"]["predicted"]
    assert share >= second.report["runs"][0]["metrics"]["prediction_share"]["few"]["predicted"]


def test_tau_without_saved_logits_evaluates_and_saves_them(tiny_data, tmp_path: Path) -> None:
    from sage_cli.errors import SageError

    prepared, text = tiny_data
    result = run(ReportConfig(out=tmp_path / "o", zero_shot=prepared, text_cache=text, device="cpu", tau=(0.5,),
                              figures=False))
    assert result.evaluated == ("zero-shot",) and (tmp_path / "o" / "zero-shot" / LOGITS).is_file()
    with pytest.raises(SageError, match="--tau values must differ"):
        ReportConfig(out=tmp_path / "x", zero_shot=prepared, text_cache=text, tau=(1.0, 1.0))
