"""The compensated logit-adjusted loss and its estimators, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from sage_cli.errors import SageError
from sage_cli.config import cli_names
from sage_cli.losses import (
    ESTIMATORS,
    CountCompensation,
    LossConfig,
    NoCompensation,
    SemanticCompensation,
    ZeroShotCompensation,
    build_estimator,
    build_loss,
    compute_zero_shot_prior,
)
from sage_cli.losses.classification import HeadView


@pytest.fixture(autouse=True)
def errors_name_flags():
    """These tests read the losses' errors as `sage train` shows them: options named by their flags."""
    with cli_names():
        yield

AXES = torch.eye(3)  # text vectors t_y = e_y


def test_plain_logit_adjustment_hand_values() -> None:
    # pi = [1/2, 1/4, 1/4]; z = [log 2, 2 log 2, 2 log 2] -> z + log pi = [0, 0, 0] -> CE = log 3
    loss = build_loss(LossConfig(loss="la", compensation="none"), torch.tensor([2.0, 1.0, 1.0]), AXES)
    logits = torch.tensor([[math.log(2), 2 * math.log(2), 2 * math.log(2)]] * 2)
    value = loss(logits, torch.tensor([0, 2]))
    assert value.item() == pytest.approx(math.log(3), abs=1e-6)
    # z = 0 -> softmax(log pi) = pi -> CE(y=0) = -log 1/2
    assert loss(torch.zeros(1, 3), torch.tensor([0])).item() == pytest.approx(math.log(2), abs=1e-6)


def test_tau_scales_the_prior() -> None:
    # pi = [0.8, 0.2], tau = 0.5 -> softmax(0.5 log pi) = [2/3, 1/3] -> CE(y=1) = log 3
    loss = build_loss(LossConfig(loss="la", tau=0.5, compensation="none"), torch.tensor([4.0, 1.0]), AXES[:2])
    assert loss(torch.zeros(1, 2), torch.tensor([1])).item() == pytest.approx(math.log(3), abs=1e-6)


def test_count_compensation_hand_values() -> None:
    # n = [2, 1, 1], kappa = 2, lam = 1: delta = log(1 + 2/n) = [log 2, log 3, log 3]
    cfg = LossConfig(loss="la", compensation="count", kappa=2.0, lam=1.0)
    loss = build_loss(cfg, torch.tensor([2.0, 1.0, 1.0]), AXES)
    torch.testing.assert_close(loss.delta(), torch.tensor([math.log(2), math.log(3), math.log(3)]))
    # z = 0: log pi - delta = [-log 4, -log 12, -log 12] -> softmax [3/5, 1/5, 1/5]
    assert loss(torch.zeros(1, 3), torch.tensor([0])).item() == pytest.approx(math.log(5 / 3), abs=1e-6)
    assert loss(torch.zeros(1, 3), torch.tensor([1])).item() == pytest.approx(math.log(5), abs=1e-6)
    half = build_loss(LossConfig(loss="la", compensation="count", kappa=2.0, lam=0.5), torch.tensor([2.0, 1.0, 1.0]), AXES)
    torch.testing.assert_close(half.delta(), 0.5 * loss.delta())


def test_loss_leaves_the_logits_alone() -> None:
    """Predictions use z(x) alone: the loss adds its offset to a copy, never in place."""
    loss = build_loss(LossConfig(loss="la", compensation="count"), torch.tensor([100.0, 1.0]), AXES[:2]).train()
    logits = torch.tensor([[0.3, 0.1]])
    loss(logits, torch.tensor([1]))
    assert torch.equal(logits, torch.tensor([[0.3, 0.1]]))
    assert logits.argmax().item() == 0


# One batch with a head class (n = 1000) and two tail classes (n = 2): class 1's features sit
# on its text anchor's axis, class 2's are pulled towards class 0.
FEATURES = torch.tensor(
    [
        [1.0, 0.1, 0.0], [1.0, -0.1, 0.0],  # class 0: mean e0, squared distances 0.01 + 0.01
        [0.1, 1.0, 0.0], [-0.1, 1.0, 0.0],  # class 1: mean e1
        [0.6, 0.1, 0.8], [0.6, -0.1, 0.8],  # class 2: mean (0.6, 0, 0.8)
    ]
)
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
COUNTS = torch.tensor([1000.0, 2.0, 2.0])


def _semantic(**overrides) -> SemanticCompensation:
    cfg = LossConfig(**{"compensation": "semantic", "kappa": 2.0, "lam": 1.0, "ema": 0.0, **overrides})
    return build_estimator("semantic", COUNTS, AXES, cfg)


def test_semantic_compensation_hand_values() -> None:
    estimator = _semantic()
    estimator.update(FEATURES, LABELS)
    # S^2 = 0.06 / 6 = 0.01; mean_x v = (8/15, 1/3, 4/15) -> t'_y = e_y + (1/5, 0, -1/15)
    # ||m - t'||^2 = [2/45, 2/45, 8/45]; shrink (kappa/(n+kappa))^2 = [(2/1002)^2, 1/4, 1/4]
    assert estimator.spread.item() == pytest.approx(0.01, rel=1e-5)
    torch.testing.assert_close(estimator.feature_mean, torch.tensor([8 / 15, 1 / 3, 4 / 15]))
    expected = torch.tensor([(2 / 1002) ** 2 * (2 / 45) / 0.01, 10 / 9, 40 / 9])
    torch.testing.assert_close(estimator.delta(), expected, rtol=1e-4, atol=1e-7)
    delta = estimator.delta()
    assert delta[0] < 1e-4  # head class ~0
    assert delta[2] > delta[1] > 0  # the tail class far from its anchor gets more


def test_semantic_delta_is_clamped() -> None:
    estimator = _semantic(delta_max=2.0)
    estimator.update(FEATURES, LABELS)
    torch.testing.assert_close(estimator.delta()[1:], torch.tensor([10 / 9, 2.0]), rtol=1e-4, atol=0)


def test_semantic_delta_is_zero_until_every_class_is_seen() -> None:
    estimator = _semantic()
    estimator.update(FEATURES[:4], LABELS[:4])  # classes 0 and 1 only
    assert torch.equal(estimator.delta(), torch.zeros(3))
    estimator.update(FEATURES[4:], LABELS[4:])
    assert estimator.seen.all() and estimator.delta()[2] > 0


def test_semantic_running_stats_are_emas() -> None:
    estimator = _semantic(ema=0.9)
    estimator.update(FEATURES[:2], LABELS[:2])  # class 0 mean (1, 0, 0), S^2 = 0.01
    estimator.update(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([0]))
    # m_0 = 0.9 (1,0,0) + 0.1 (0,1,0); the new image is 0.81 + 0.81 = 1.62 from it
    torch.testing.assert_close(estimator.class_means[0], torch.tensor([0.9, 0.1, 0.0]))
    torch.testing.assert_close(estimator.feature_mean, torch.tensor([0.9, 0.1, 0.0]))
    assert estimator.spread.item() == pytest.approx(0.9 * 0.01 + 0.1 * 1.62, rel=1e-5)
    assert estimator.num_updates.item() == 2


def test_semantic_loss_updates_first_then_uses_delta() -> None:
    loss = build_loss(LossConfig(loss="la", compensation="semantic", kappa=2.0, lam=1.0, ema=0.0), COUNTS, AXES).train()
    logits = torch.zeros(6, 3)
    value = loss(logits, LABELS, FEATURES)
    offset = torch.log(COUNTS / COUNTS.sum()) - torch.tensor([(2 / 1002) ** 2 * 400 / 90, 10 / 9, 40 / 9])
    expected = torch.nn.functional.cross_entropy(logits + offset, LABELS)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_eval_mode_does_not_touch_the_statistics() -> None:
    loss = build_loss(LossConfig(loss="la", compensation="semantic"), COUNTS, AXES).eval()
    loss(torch.zeros(6, 3), LABELS, FEATURES)
    assert loss.estimator.num_updates.item() == 0 and not loss.estimator.seen.any()


def test_semantic_needs_features_in_training() -> None:
    loss = build_loss(LossConfig(loss="la", compensation="semantic"), COUNTS, AXES).train()
    with pytest.raises(ValueError, match="'semantic' compensation needs the image features"):
        loss(torch.zeros(1, 3), torch.tensor([0]))
    counted = build_loss(LossConfig(loss="la", compensation="count"), COUNTS, AXES).train()
    assert torch.isfinite(counted(torch.zeros(1, 3), torch.tensor([0])))


def test_statistics_round_trip_through_state_dict() -> None:
    loss = build_loss(LossConfig(loss="la", compensation="semantic", kappa=2.0), COUNTS, AXES).train()
    loss(torch.zeros(6, 3), LABELS, FEATURES)
    restored = build_loss(LossConfig(loss="la", compensation="semantic", kappa=2.0), COUNTS, AXES)
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.delta(), loss.delta())
    assert {"log_prior", "estimator.class_means", "estimator.spread", "estimator.seen"} <= set(loss.state_dict())


def test_estimator_registry() -> None:
    assert ESTIMATORS == {"semantic": SemanticCompensation, "count": CountCompensation,
                          "zero-shot": ZeroShotCompensation, "none": NoCompensation}
    assert isinstance(build_estimator("count", COUNTS, AXES, LossConfig(loss="la")), CountCompensation)
    assert torch.equal(build_estimator("none", COUNTS, AXES, LossConfig(loss="la")).delta(), torch.zeros(3))


def test_unknown_estimator_lists_the_valid_names() -> None:
    message = "--compensation must be one of semantic, count, zero-shot, none; got 'kl'"
    with pytest.raises(SageError, match=message):
        LossConfig(loss="la", compensation="kl")
    with pytest.raises(SageError, match=message):
        build_estimator("kl", COUNTS, AXES, LossConfig(loss="la"))


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [({"tau": -1.0}, "--tau"), ({"lam": -0.1}, "--lam"), ({"kappa": 0.0}, "--kappa"),
     ({"delta_max": -1.0}, "--delta-max"), ({"ema": 1.0}, "--ema")],
)
def test_bad_loss_config_names_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(SageError, match=flag):
        LossConfig(**kwargs)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(SageError, match=r"classes \[1\] have no training images"):
        build_loss(LossConfig(loss="la"), torch.tensor([3.0, 0.0, 1.0]), AXES)
    with pytest.raises(SageError, match="disagree on the number of classes"):
        build_loss(LossConfig(loss="la"), torch.tensor([3.0, 1.0]), AXES)


# The zero-shot estimator. With text t = e0, e1 and s = ln 3, a feature on e0 has zero-shot
# softmax [3/4, 1/4] and one on e1 [1/4, 3/4].
TEXT2 = torch.eye(2)
LN3 = math.log(3)


def test_zero_shot_prior_is_class_balanced() -> None:
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # both classes predicted right: unbiased, whatever the counts (image-weighted it would be [7/12, 5/12])
    q = compute_zero_shot_prior(features, torch.tensor([0, 0, 1]), TEXT2, LN3)
    torch.testing.assert_close(q, torch.tensor([0.5, 0.5]))
    # class 1's image looks like class 0: the classifier over-predicts class 0
    q = compute_zero_shot_prior(features[:2], torch.tensor([0, 1]), TEXT2, LN3)
    torch.testing.assert_close(q, torch.tensor([0.75, 0.25]))
    # features are normalised first: a longer vector gives the same softmax
    q = compute_zero_shot_prior(3 * features[:2], torch.tensor([0, 1]), TEXT2, LN3)
    torch.testing.assert_close(q, torch.tensor([0.75, 0.25]))


def test_zero_shot_prior_refuses_a_class_without_images() -> None:
    with pytest.raises(SageError, match=r"--compensation zero-shot: classes \[1\] have no training images"):
        compute_zero_shot_prior(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), TEXT2, LN3)


def _zero_shot(**overrides) -> ZeroShotCompensation:
    cfg = LossConfig(**{"compensation": "zero-shot", "lam": 1.0, **overrides})
    return build_estimator("zero-shot", torch.tensor([2.0, 1.0]), TEXT2, cfg)


def test_zero_shot_delta_hand_values() -> None:
    estimator = _zero_shot()
    assert torch.equal(estimator.delta(), torch.zeros(2))  # not fitted: q uniform
    estimator.fit_zero_shot(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]), LN3)
    # log q = [ln 3/4, ln 1/4], mean -> centred [ln 3 / 2, -ln 3 / 2]; delta = -lam * centred
    torch.testing.assert_close(estimator.delta(), torch.tensor([-LN3 / 2, LN3 / 2]))
    assert bool(estimator.fitted)
    half = _zero_shot(lam=0.5)
    half.fit_zero_shot(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]), LN3)
    torch.testing.assert_close(half.delta(), torch.tensor([-LN3 / 4, LN3 / 4]))
    clamped = _zero_shot(delta_max=0.1)
    clamped.fit_zero_shot(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]), LN3)
    torch.testing.assert_close(clamped.delta(), torch.tensor([-0.1, 0.1]))
    record = estimator.describe()
    assert record["zero_shot_prior"] == [0.75, 0.25] and record["fitted"] is True
    assert record["delta"] == pytest.approx([-LN3 / 2, LN3 / 2], abs=1e-6)


def test_zero_shot_loss_is_fitted_by_build_loss_and_corrects_the_bias() -> None:
    counts = torch.tensor([2.0, 1.0])
    features = (torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    loss = build_loss(LossConfig(loss="la", compensation="zero-shot", lam=1.0), counts, TEXT2, LN3, features).train()
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    offset = torch.log(torch.tensor([2 / 3, 1 / 3])) - torch.tensor([-LN3 / 2, LN3 / 2])
    expected = torch.nn.functional.cross_entropy(logits + offset, labels)
    assert loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert not loss.needs_features  # fitted once before training, nothing per batch
    restored = build_loss(LossConfig(loss="la", compensation="zero-shot", lam=1.0), counts, TEXT2, LN3, features)
    restored.estimator.zero_shot_prior.fill_(0.5)
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.delta(), loss.delta())


def test_zero_shot_loss_without_the_frozen_features_is_refused() -> None:
    with pytest.raises(SageError, match="--compensation zero-shot needs the frozen tower's features"):
        build_loss(LossConfig(loss="la", compensation="zero-shot"), torch.tensor([2.0, 1.0]), TEXT2)


def test_text_alignment_adds_the_adjusted_ce_of_the_frozen_text_classifier() -> None:
    # pi = [1/2, 1/4, 1/4], t = e_y, s = 25. v(x) = e_0 -> text logits [25, 0, 0]; z = 0 -> main CE = log 2.
    # text term: CE([25 + log 1/2, log 1/4, log 1/4], 0) = log(1 + 2 * (1/4) / (1/2) * e^-25) = log(1 + e^-25)
    cfg = LossConfig(loss="la", compensation="none", text_align=0.5)
    loss = build_loss(cfg, torch.tensor([2.0, 1.0, 1.0]), AXES, logit_scale=25.0).train()
    assert loss.needs_features
    features = torch.tensor([[1.0, 0.0, 0.0]])
    value = loss(torch.zeros(1, 3), torch.tensor([0]), features)
    assert value.item() == pytest.approx(math.log(2) + 0.5 * math.log1p(math.exp(-25)), abs=1e-6)
    # v(x) = e_1 for a class-0 image: text logits [0, 25, 0] -> text CE = log((1/2 + 1/4 e^25 + 1/4) / (1/2))
    wrong = loss(torch.zeros(1, 3), torch.tensor([0]), torch.tensor([[0.0, 1.0, 0.0]]))
    expected = math.log(2) + 0.5 * math.log((0.5 + 0.25 * math.exp(25) + 0.25) / 0.5)
    assert wrong.item() == pytest.approx(expected, rel=1e-6)
    # the term sees the compensation too: count delta enters both CEs
    counted = build_loss(LossConfig(loss="la", compensation="count", kappa=2.0, lam=1.0, text_align=1.0),
                         torch.tensor([2.0, 1.0, 1.0]), AXES).train()
    plain = build_loss(LossConfig(loss="la", compensation="count", kappa=2.0, lam=1.0),
                       torch.tensor([2.0, 1.0, 1.0]), AXES).train()
    z = torch.tensor([[0.2, -0.1, 0.4]])
    text_logits = 25.0 * features @ AXES.t()
    assert counted(z, torch.tensor([1]), features).item() == pytest.approx(
        plain(z, torch.tensor([1])).item() + plain(text_logits, torch.tensor([1])).item(), abs=1e-5)


def test_text_alignment_off_by_default_and_refused_outside_the_la_family() -> None:
    plain = build_loss(LossConfig(loss="la", compensation="none"), torch.tensor([2.0, 1.0, 1.0]), AXES)
    assert not plain.needs_features
    with pytest.raises(SageError, match="--text-align must be >= 0; got -1"):
        LossConfig(loss="la", text_align=-1.0)
    with pytest.raises(SageError, match="--text-align composes with the logit-adjusted losses"):
        build_loss(LossConfig(loss="focal", compensation="none", text_align=0.5), torch.tensor([2.0, 1.0]), AXES[:2])
    with pytest.raises(ValueError, match="needs the image features"):
        build_loss(LossConfig(loss="la", compensation="none", text_align=0.5), torch.tensor([2.0, 1.0]), AXES[:2]).train()(
            torch.zeros(1, 2), torch.tensor([0]))


def test_spread_margin_hand_values() -> None:
    # counts [6, 2], kappa 2 -> r = [0.25, 0.5]; pi = [0.75, 0.25]; ema 0.5; lambda_s 2; head rows e_0, e_1; s = 2.
    cfg = LossConfig(loss="la", compensation="none", spread=2.0, kappa=2.0, ema=0.5)
    loss = build_loss(cfg, torch.tensor([6.0, 2.0]), AXES[:2, :2]).train()
    assert loss.needs_head and not loss.needs_features
    weight = torch.tensor([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)  # normalised: e_0, e_1
    # head inputs (normalised by the margin): class 0 at e_0 and e_1 (residuals -+[0.5, -0.5]), class 1 alone
    inputs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    logits = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    value = loss(logits, labels, head=HeadView(inputs, weight, 2.0))
    # pooled over one degree of freedom: Sigma = 2 * [0.5, -0.5]^T [0.5, -0.5] = [[0.5, -0.5], [-0.5, 0.5]]
    assert torch.allclose(loss.spread.covariance, torch.tensor([[0.5, -0.5], [-0.5, 0.5]]))
    # (w_1 - w_0)^T Sigma (w_1 - w_0) = [-1, 1] Sigma [-1, 1]^T = 2; margin 0.5 * 2 * r_y * s^2 * 2 = 8 r_y
    margins = torch.tensor([[0.0, 2.0], [0.0, 2.0], [4.0, 0.0]])
    expected = torch.nn.functional.cross_entropy(logits + torch.tensor([0.75, 0.25]).log() + margins, labels)
    assert value.item() == pytest.approx(expected.item(), abs=1e-6)
    value.backward()  # the margin's gradient reaches the head's rows (the logits here are constants)
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    # a batch of singletons carries no spread: the covariance stays; a second pair halves it towards [[0, 0], [0, 2]]
    loss(logits[:2], torch.tensor([0, 1]), head=HeadView(inputs[:2], weight, 2.0))
    assert torch.allclose(loss.spread.covariance, torch.tensor([[0.5, -0.5], [-0.5, 0.5]]))
    loss(logits[:2], torch.tensor([1, 1]), head=HeadView(torch.tensor([[0.0, 1.0], [0.0, -1.0]]), weight, 2.0))
    assert torch.allclose(loss.spread.covariance, torch.tensor([[0.25, -0.25], [-0.25, 1.25]]))


def test_spread_margin_is_frozen_in_eval_and_checkpointed() -> None:
    cfg = LossConfig(loss="la", compensation="none", spread=1.0)
    loss = build_loss(cfg, torch.tensor([6.0, 2.0, 1.0]), AXES, head_dim=5).train()
    generator = torch.Generator().manual_seed(0)
    view = HeadView(torch.randn(8, 5, generator=generator), torch.randn(3, 5, generator=generator), 25.0)
    loss(torch.randn(8, 3, generator=generator), torch.tensor([0, 0, 1, 1, 2, 0, 1, 2]), head=view)
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    assert state["spread.covariance"].shape == (5, 5) and state["spread.covariance"].abs().sum() > 0
    loss.eval()(torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 0, 1, 1, 2]), head=view)
    assert all(torch.equal(state[k], v) for k, v in loss.state_dict().items())
    restored = build_loss(cfg, torch.tensor([6.0, 2.0, 1.0]), AXES, head_dim=5)
    restored.load_state_dict(state)
    assert torch.equal(restored.spread.covariance, state["spread.covariance"])


def test_spread_margin_off_by_default_and_refused_outside_the_la_family() -> None:
    plain = build_loss(LossConfig(loss="la"), torch.tensor([2.0, 1.0, 1.0]), AXES)
    assert plain.spread is None and not plain.needs_head
    with pytest.raises(SageError, match="--spread must be >= 0; got -1"):
        LossConfig(loss="la", spread=-1.0)
    with pytest.raises(SageError, match="--spread composes with the logit-adjusted losses"):
        LossConfig(loss="ldam", spread=1.0)
    with pytest.raises(ValueError, match="needs the head's input and rows"):
        build_loss(LossConfig(loss="la", spread=1.0), torch.tensor([2.0, 1.0]), AXES[:2]).train()(
            torch.zeros(1, 2), torch.tensor([0]))


def test_spread_margin_meets_an_empty_micro_batch_without_changing() -> None:
    # under DDP a rank whose micro-batch has no image still joins the statistics' all-gather (observe_empty)
    loss = build_loss(LossConfig(loss="la", compensation="semantic", spread=1.0), torch.tensor([6.0, 2.0, 1.0]), AXES,
                      head_dim=4).train()
    view = HeadView(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), torch.randn(3, 4), 25.0)
    loss(torch.zeros(6, 3), torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(6, 3), head=view)
    before = loss.spread.covariance.clone()
    update, calls = loss.spread.update, []
    loss.spread.update = lambda inputs, labels: (calls.append(tuple(inputs.shape)), update(inputs, labels))
    loss.observe_empty(3, torch.device("cpu"))
    assert calls == [(0, 4)]  # it took part, with rows of the head's width
    assert torch.equal(loss.spread.covariance, before) and int(loss.spread.num_updates) == 1
