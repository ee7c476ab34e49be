"""--optimizer: SGD stays LIFT's default; AdamW's parameter groups (no decay on biases, norms, scales,
prompts) and one step checked by hand and against torch.optim.AdamW."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sage_cli.methods import resolve
from sage_cli.schema import OptimConfig
from sage_cli.train.config import identity_of
from sage_cli.train.optim import build_optimizer, split_decay

REQUIRED = {"prepared": Path("p"), "text_cache": Path("t"), "out": Path("o")}


class Tower(nn.Module):
    """A stand-in with every kind of tensor a PEFT module trains."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4, 3)  # weight [3, 4] decays, bias [3] does not
        self.norm = nn.LayerNorm(3)  # weight, bias [3]: not decayed
        self.prompts = nn.Module()
        self.prompts.tokens = nn.Parameter(torch.randn(2, 3))  # VPT prompts [P, D]: not decayed (timm's cls token)
        self.ssf_scale = nn.Parameter(torch.ones(3))  # SSF scale [D]: not decayed
        self.frozen = nn.Parameter(torch.randn(3, 3), requires_grad=False)  # never in the optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.prompts.tokens.sum(0)
        return (self.norm(self.proj(x)) * self.ssf_scale + tokens) @ self.frozen


def _names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for p in params]


def test_sgd_stays_the_default_and_every_method_uses_it() -> None:
    for method in ("lift", "sage", "linear"):
        assert resolve(method, REQUIRED).optim.optimizer == "sgd"
    model = Tower()
    sgd = build_optimizer(model, OptimConfig())
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 1
    group = sgd.param_groups[0]
    assert _names(model, group["params"]) == ["ssf_scale", "proj.weight", "proj.bias", "norm.weight", "norm.bias",
                                              "prompts.tokens"]  # in the given order (a resume relies on it)
    assert group["weight_decay"] == 5e-4 and group["momentum"] == 0.9  # LIFT: SGD decays everything
    adamw_fields = {"optimizer", "beta1", "beta2", "eps"}
    plain = identity_of(resolve("lift", REQUIRED)).get("options", {})
    assert not adamw_fields & set(plain)  # AdamW's fields left default: fingerprints kept
    chosen = identity_of(resolve("lift", {**REQUIRED, "optimizer": "adamw"}))["options"]
    assert chosen == {**plain, "optimizer": "adamw"}


def test_adamw_groups_decay_matrices_only() -> None:
    model = Tower()
    decayed, kept = split_decay(model.named_parameters())
    assert _names(model, decayed) == ["proj.weight"]
    assert _names(model, kept) == ["ssf_scale", "proj.bias", "norm.weight", "norm.bias", "prompts.tokens"]
    adamw = build_optimizer(model, OptimConfig(optimizer="adamw", lr=0.1, weight_decay=0.05, beta1=0.8, beta2=0.99,
                                               eps=1e-6))
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    assert all(g["betas"] == (0.8, 0.99) and g["eps"] == 1e-6 and g["lr"] == 0.1 for g in adamw.param_groups)


def test_one_adamw_step_matches_the_formula_and_torch() -> None:
    lr, wd, b1, b2, eps = 0.1, 0.05, 0.8, 0.99, 1e-6
    ours_model, theirs_model = Tower(), Tower()
    ours = build_optimizer(ours_model, OptimConfig(optimizer="adamw", lr=lr, weight_decay=wd, beta1=b1, beta2=b2,
                                                   eps=eps))
    params = dict(theirs_model.named_parameters())
    theirs = torch.optim.AdamW([{"params": [params["proj.weight"]], "weight_decay": wd},
                                {"params": [params[n] for n in ("proj.bias", "norm.weight", "norm.bias",
                                                                "prompts.tokens", "ssf_scale")], "weight_decay": 0.0}],
                               lr=lr, betas=(b1, b2), eps=eps)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    before = {n: p.detach().clone() for n, p in ours_model.named_parameters()}
    for model, optimizer in ((ours_model, ours), (theirs_model, theirs)):
        model(x).square().mean().backward()
        optimizer.step()
    for name, param in ours_model.named_parameters():
        assert torch.allclose(param, params[name], atol=1e-6, rtol=0), name
        if not param.requires_grad:
            assert torch.equal(param, before[name])
            continue
        # step 1 by hand: m_hat = g, v_hat = g^2, p <- p (1 - lr wd) - lr g / (|g| + eps)
        grad = param.grad
        decay = wd if name == "proj.weight" else 0.0
        expected = before[name] * (1 - lr * decay) - lr * grad / (grad.abs() + eps)
        assert torch.allclose(param.detach(), expected, atol=1e-6, rtol=0), name


def test_adamw_bounds_are_checked() -> None:
    with pytest.raises(Exception, match="beta2"):
        OptimConfig(optimizer="adamw", beta2=1.0)
    with pytest.raises(Exception, match="optimizer"):
        OptimConfig(optimizer="adam")


def test_a_run_trains_with_adamw_and_checkpoints_its_groups(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                             tmp_path: Path) -> None:
    from sage_cli.train import build_train_config, run
    from sage_cli.train.checkpoint import find_latest_checkpoint, load_checkpoint_state

    config = build_train_config({"prepared": synthetic_prepared, "text_cache": synthetic_text_cache,
                                 "out": tmp_path / "run", "method": "lift", "batch_size": 8, "device": "cpu",
                                 "num_workers": 0, "max_steps": 3, "optimizer": "adamw", "lr": 1e-3,
                                 "weight_decay": 0.1})
    result = run(config)
    assert result.record["config"]["optim"]["optimizer"] == "adamw"
    groups = load_checkpoint_state(find_latest_checkpoint(result.out))["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    trainable = result.classifier.named_trainable_parameters()
    decayed = [n for n, p in trainable if p.ndim >= 2 and not n.endswith("prompts.tokens")]
    assert len(groups[0]["params"]) == len(decayed) > 0  # the adapters' matrices and the head
    assert len(groups[1]["params"]) == len(trainable) - len(decayed) > 0  # their biases
