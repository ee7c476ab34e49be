"""Each loss of the registry against hand-computed values on 3-class examples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sage_cli.config import cli_names
from sage_cli.errors import SageError
from sage_cli.losses import LOSSES, LossConfig, build_loss
from sage_cli.methods import resolve


@pytest.fixture(autouse=True)
def errors_name_flags():
    """These tests read the losses' errors as `sage train` shows them: options named by their flags."""
    with cli_names():
        yield

AXES = torch.eye(3)


def _loss(name: str, counts: list[float], logit_scale: float = 25.0, **options):
    return build_loss(LossConfig(loss=name, compensation=options.pop("compensation", "none"), **options),
                      torch.tensor(counts), AXES, logit_scale).train()


def test_cross_entropy() -> None:
    loss = _loss("ce", [4.0, 2.0, 1.0])  # no prior: uniform logits give log 3 whatever the counts
    assert loss(torch.zeros(1, 3), torch.tensor([2])).item() == pytest.approx(math.log(3), abs=1e-6)
    # z = [log 2, 0, 0], y = 0: p = 2 / 4 -> log 2
    assert loss(torch.tensor([[math.log(2), 0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(math.log(2), abs=1e-6)


def test_balanced_softmax_is_la_at_tau_one_and_composes_with_compensation() -> None:
    # pi = [1/2, 1/4, 1/4]; z = [log 2, 2 log 2, 2 log 2] -> z + log pi = 0 -> log 3, whatever --tau says
    loss = _loss("bs", [2.0, 1.0, 1.0], tau=0.5)
    z = torch.tensor([[math.log(2), 2 * math.log(2), 2 * math.log(2)]])
    assert loss(z, torch.tensor([0])).item() == pytest.approx(math.log(3), abs=1e-6)
    # count compensation, kappa 2, lam 1: delta = [log 2, log 3, log 3]; z = 0 -> softmax [3/5, 1/5, 1/5]
    counted = _loss("bs", [2.0, 1.0, 1.0], tau=0.5, compensation="count", kappa=2.0, lam=1.0)
    assert counted(torch.zeros(1, 3), torch.tensor([0])).item() == pytest.approx(math.log(5 / 3), abs=1e-6)


def test_focal() -> None:
    # z = 0: p_y = 1/3, CE = log 3 -> (1 - 1/3)^2 log 3 = 4/9 log 3 (gamma 2); gamma 0 is CE
    loss = _loss("focal", [4.0, 2.0, 1.0])
    assert loss(torch.zeros(1, 3), torch.tensor([1])).item() == pytest.approx(4 / 9 * math.log(3), abs=1e-6)
    plain = _loss("focal", [4.0, 2.0, 1.0], focal_gamma=0.0)
    assert plain(torch.zeros(1, 3), torch.tensor([1])).item() == pytest.approx(math.log(3), abs=1e-6)


def test_ldam() -> None:
    # n = [16, 1, 1]: n^(-1/4) = [1/2, 1, 1] -> margins [0.25, 0.5, 0.5] (max 0.5); s = 2
    loss = _loss("ldam", [16.0, 1.0, 1.0], logit_scale=2.0)
    torch.testing.assert_close(loss.margins, torch.tensor([0.25, 0.5, 0.5]))
    # y = 1: z' = [0, -1, 0] -> CE = 1 + log(2 + e^-1) = log(1 + 2e)
    assert loss(torch.zeros(1, 3), torch.tensor([1])).item() == pytest.approx(math.log(1 + 2 * math.e), abs=1e-6)
    # y = 0: z' = [-0.5, 0, 0] -> CE = log(1 + 2 e^0.5)
    assert loss(torch.zeros(1, 3), torch.tensor([0])).item() == pytest.approx(math.log(1 + 2 * math.exp(0.5)), abs=1e-6)


def test_class_balanced_is_normalised_by_the_batch_weights() -> None:
    # beta 0.5, n = [1, 2, 3]: w = [1, 2/3, 4/7], mean 47/63 -> [63/47, 42/47, 36/47]
    loss = _loss("cb", [1.0, 2.0, 3.0], cb_beta=0.5)
    torch.testing.assert_close(loss.weights, torch.tensor([63 / 47, 42 / 47, 36 / 47]))
    # three samples, labels 0, 2, 2; z = 0 for the first two (CE log 3), z = [0, 0, ln 4] for the
    # third (p_y = 4/6, CE ln 1.5): (63 ln 3 + 36 ln 3 + 36 ln 1.5) / (63 + 36 + 36)
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, math.log(4)]])
    labels = torch.tensor([0, 2, 2])
    expected = (99 * math.log(3) + 36 * math.log(1.5)) / 135
    assert loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    assert loss.normaliser(labels) == pytest.approx(135 / 47, abs=1e-6)
    # Cui et al.'s per-sample mean, by name: (63 ln 3 + 36 ln 3 + 36 ln 1.5) / 47 / 3
    per_sample = _loss("cb", [1.0, 2.0, 3.0], cb_beta=0.5, reweight_norm="samples")
    assert per_sample(logits, labels).item() == pytest.approx(expected * 135 / 47 / 3, abs=1e-6)
    assert per_sample.normaliser(labels) == 3.0


def test_generalized_reweight() -> None:
    # n = [1, 1, 2]: n / N = [1/4, 1/4, 1/2]; p = 1: w = [4, 4, 2], mean 10/3 -> [6/5, 6/5, 3/5]
    loss = _loss("grw", [1.0, 1.0, 2.0])
    torch.testing.assert_close(loss.weights, torch.tensor([1.2, 1.2, 0.6]))
    # p = 1/2: w = [2, 2, sqrt 2], mean (4 + sqrt 2) / 3
    half = _loss("grw", [1.0, 1.0, 2.0], grw_exp=0.5)
    root2 = math.sqrt(2)
    torch.testing.assert_close(half.weights, torch.tensor([6, 6, 3 * root2]) / (4 + root2))
    # labels 0, 2: z = 0 (CE ln 3), z = [0, 0, ln 4] (p_y = 4/6, CE ln 1.5) -> (6/5 ln 3 + 3/5 ln 1.5) / (9/5)
    logits, labels = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.log(4)]]), torch.tensor([0, 2])
    expected = (1.2 * math.log(3) + 0.6 * math.log(1.5)) / 1.8
    assert loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    # p = 0: every weight 1, plain CE
    flat = _loss("grw", [1.0, 1.0, 2.0], grw_exp=0.0)
    assert flat(logits, labels).item() == pytest.approx((math.log(3) + math.log(1.5)) / 2, abs=1e-6)


@pytest.mark.parametrize("name", ["cb", "grw"])
def test_reweighted_losses_equal_pytorch_cross_entropy_with_lifts_weights(name: str) -> None:
    counts = torch.tensor([400.0, 90.0, 30.0, 7.0, 1.0])
    # LIFT's weights, as utils/losses.py computes them (float32 counts), then F.cross_entropy(weight=w)
    if name == "cb":
        weights = (1.0 - 0.9999) / (1.0 - 0.9999 ** counts)
    else:
        weights = 1.0 / (counts / counts.sum()) ** 1.0
    weights = weights / weights.mean()
    loss = build_loss(LossConfig(loss=name), counts, torch.eye(5), 25.0)
    torch.testing.assert_close(loss.weights, weights, rtol=1e-6, atol=0)
    generator = torch.Generator().manual_seed(0)
    logits, labels = 5 * torch.randn(16, 5, generator=generator), torch.randint(0, 5, (16,), generator=generator)
    torch.testing.assert_close(loss(logits, labels), F.cross_entropy(logits, labels, weight=weights),
                               rtol=1e-6, atol=0)


def test_reweight_norm_applies_to_the_reweighted_losses_only() -> None:
    with pytest.raises(SageError, match="--reweight-norm samples applies to the reweighted losses"):
        LossConfig(loss="la", reweight_norm="samples")
    with pytest.raises(SageError, match="--reweight-norm must be one of"):
        LossConfig(loss="cb", reweight_norm="batch")
    with pytest.raises(SageError, match="--grw-exp"):
        LossConfig(loss="grw", grw_exp=-1.0)


def test_lade() -> None:
    # pi = [1/2, 1/4, 1/4], one sample z = 0 of class 0: CE(z + log pi) = log 2;
    # first = [0, 0, 0]; second_c = -log pi_c - log 3; bound = first - second - 0.1 second^2
    loss = _loss("lade", [2.0, 1.0, 1.0])
    prior = [0.5, 0.25, 0.25]
    second = [-math.log(p) - math.log(3) for p in prior]
    bound = [-s - 0.1 * s * s for s in second]
    expected = math.log(2) - 0.1 * sum(p * b for p, b in zip(prior, bound))
    assert loss(torch.zeros(1, 3), torch.tensor([0])).item() == pytest.approx(expected, abs=1e-6)


def _split_step(loss, logits: torch.Tensor, labels: torch.Tensor, cuts: list[int]) -> torch.Tensor:
    """The loop's accumulated loss: each micro-batch's value times its normaliser over the step's."""
    parts = [(logits[a:b], labels[a:b]) for a, b in zip([0, *cuts], [*cuts, len(labels)])]
    total = sum(loss.normaliser(y) for _, y in parts)
    return sum(loss(z, y) * (loss.normaliser(y) / total) for z, y in parts if len(y))


@pytest.mark.parametrize(("name", "norm"), [*((n, "weights") for n in ("ce", "la", "bs", "focal", "ldam", "cb", "grw")),
                                           ("cb", "samples"), ("grw", "samples")])
def test_micro_batches_add_up_to_the_batch(name: str, norm: str) -> None:
    """k micro-batches (one of them empty) equal one batch: the loss and its gradient."""
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(8, 3, generator=generator), torch.tensor([0, 1, 2, 2, 1, 0, 0, 0])
    loss = _loss(name, [30.0, 20.0, 1.0], cb_beta=0.9, reweight_norm=norm)
    whole_logits = logits.clone().requires_grad_(True)
    whole = loss(whole_logits, labels)
    whole.backward()
    split_logits = logits.clone().requires_grad_(True)
    split = _split_step(loss, split_logits, labels, [2, 2, 3, 6])  # parts of 2, 0, 1, 3 and 2 samples
    split.backward()
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6, msg=name)
    torch.testing.assert_close(split_logits.grad, whole_logits.grad, rtol=0, atol=1e-7, msg=name)


def _resolved_loss(method: str, **options) -> LossConfig:
    return resolve(method, {"prepared": "p", "text_cache": "t", "out": "o", **options}).loss


def test_resolution_follows_the_method_and_the_la_family() -> None:
    assert (_resolved_loss("sage").loss, _resolved_loss("sage").compensation) == ("la", "semantic")
    assert _resolved_loss("lift").compensation == "none"
    assert _resolved_loss("sage", loss="focal").compensation == "none"  # sage's default is LA's
    assert _resolved_loss("sage", loss="bs").compensation == "semantic"
    with pytest.raises(SageError, match="--compensation count composes with the logit-adjusted losses"):
        _resolved_loss("linear", loss="ldam", compensation="count")
    # (a config with the loss "unresolved" no longer exists: every LossConfig is complete, issue 20)
    with pytest.raises(SageError, match="--loss must be one of"):
        LossConfig(loss="hinge")
    assert set(LOSSES) == {"ce", "la", "bs", "focal", "ldam", "cb", "grw", "lade"}
