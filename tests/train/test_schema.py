"""One schema (issue 20): a method is a named, complete config; presets by name; --print-config;
--from RUN; the "other inputs" refusal names the keys; runs written before (schema 1) still work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app
from sage_cli.config import cli_names
from sage_cli.errors import SageError
from sage_cli.methods import METHODS, load_preset, resolve
from sage_cli.schema import TrainConfig, build_config, flat_fields
from sage_cli.train import TrainHooks, build_train_config, read_config, run
from sage_cli.train.config import identity_of

runner = CliRunner()
RUN_V1 = Path(__file__).resolve().parents[1] / "data" / "run_v1"
REQUIRED = {"prepared": "p", "text_cache": "t", "out": "o"}


def _args(prepared: Path, text: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--prepared", str(prepared), "--text-cache", str(text), "--out", str(out), "--method", "sage",
            "--device", "cpu", "--num-workers", "0", "--batch-size", "8", "--max-steps", "2", "--eval-every", "0",
            "--bottleneck", "2", *extra]


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_round_trips_flat_and_nested(method: str) -> None:
    config = resolve(method, REQUIRED)
    assert build_config(TrainConfig, json.loads(json.dumps(config.to_dict()))) == config
    assert resolve(method, {k: v for k, v in config.flat().items() if k != "method"}) == config
    assert config.method == method
    # every option is in schema 1's layout (fingerprints kept) but LIFT's head feature, which trained methods changed
    expected = {"head_feature": "pre-proj"} if METHODS[method].trainable else {}
    assert identity_of(config).get("options", {}) == expected


def test_flat_keys_are_unique_and_are_the_flags() -> None:
    leaves = flat_fields()
    # data 13, model 2, peft 6, guidance 5, head 6, loss 16, optim 11, run 14; --guidance and --method beside them
    assert len(leaves) == 73
    assert {"guidance_topk", "attn_heads", "head", "logit_scale", "blocks", "lam", "out"} <= set(leaves)
    assert leaves["guidance_topk"].path == ("model", "peft", "guidance", "topk")


def test_a_method_is_a_complete_config_and_options_go_over_it() -> None:
    topk = resolve("sage-topk", REQUIRED)
    assert topk.model.guidance.topk == 5 and topk.loss.compensation == "semantic" and topk.model.peft.bottleneck is None
    assert resolve("lift", REQUIRED).model.guidance is None and resolve("lift", REQUIRED).loss.compensation == "none"
    assert resolve("linear", {**REQUIRED, "bottleneck": 4}).model.peft is None  # no PEFT part: nothing to set
    assert resolve("sage", {**REQUIRED, "guidance": False}).model.peft.module == "sg-adapter"
    with pytest.raises(SageError, match="^guidance_topk applies to the methods with text guidance; got method lift$"):
        resolve("lift", {**REQUIRED, "guidance_topk": 3})  # a Python user sees the field, not the flag
    with pytest.raises(SageError, match="^unknown option lr_max$"):
        resolve("lift", {**REQUIRED, "lr_max": 3})


def test_shipped_presets_load_by_name_and_by_path() -> None:
    assert load_preset("imagenet-lt")["epochs"] == 10 and load_preset("imagenet_lt")["checkpoint_every"] == 1000
    path = Path(__file__).resolve().parents[2] / "sage_cli" / "presets" / "shapes_lt.yaml"
    assert load_preset(str(path)) == load_preset("shapes-lt")
    with pytest.raises(SageError, match="nope-lt: config file not found .shipped presets: cifar100-lt, imagenet-lt"):
        load_preset("nope-lt")


def test_print_config_shows_the_resolved_config_and_trains_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", "shapes-lt", "--method", "sage-gate", "--prepared", "p",
                                 "--text-cache", "t", "--out", str(out), "--lr", "0.1", "--print-config"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    expected = resolve("sage-gate", {**load_preset("shapes-lt"), "prepared": "p", "text_cache": "t", "out": out,
                                     "lr": 0.1})
    assert printed == expected.to_dict()
    assert printed["optim"] == {"epochs": 8, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0005,
                                "beta1": 0.9, "beta2": 0.999, "eps": 1e-08, "warmup_epochs": 1.0, "warmup_steps": None,
                                "lr_schedule": "cosine-step"}
    assert printed["model"]["peft"]["guidance"]["gate"] == 25.0 and not out.exists()


def test_from_run_reproduces_the_run_bit_for_bit(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                 tmp_path: Path) -> None:
    first = tmp_path / "first"
    result = runner.invoke(app, _args(synthetic_prepared, synthetic_text_cache, first, "--lr", "0.05"))
    assert result.exit_code == 0, result.output
    again = tmp_path / "again"
    result = runner.invoke(app, ["train", "--from", str(first), "--out", str(again)])
    assert result.exit_code == 0, result.output
    old, new = (artifacts.read_record(d, artifacts.TRAIN_RECORD) for d in (first, again))
    assert new["fingerprint"] == old["fingerprint"] and new["config"]["run"]["out"] == str(again)
    a, b = load_file(str(first / "adapter.safetensors")), load_file(str(again / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)  # the same computation, on this machine
    changed = runner.invoke(app, ["train", "--from", str(first), "--out", str(tmp_path / "lr"), "--lr", "0.1",
                                  "--print-config"])
    assert json.loads(changed.stdout)["optim"]["lr"] == 0.1


def test_the_other_inputs_refusal_names_the_keys_that_differ(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, _args(synthetic_prepared, synthetic_text_cache, out)).exit_code == 0
    result = runner.invoke(app, _args(synthetic_prepared, synthetic_text_cache, out, "--lr", "0.5", "--seed", "3"))
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert ("holds a train result of other inputs; choose another --out or pass --force to overwrite it "
            "(they differ in config.optim.lr, config.run.seed)") in text, result.output


def test_invalid_values_name_the_field_in_python_and_the_flag_on_the_command_line() -> None:
    with pytest.raises(SageError, match="^bottleneck must be >= 1; got 0$"):
        resolve("sage", {**REQUIRED, "bottleneck": 0})
    with cli_names(), pytest.raises(SageError, match="^--bottleneck must be >= 1; got 0$"):
        resolve("sage", {**REQUIRED, "bottleneck": 0})
    with pytest.raises(SageError, match="^--method must be one of linear, lift, sage"):
        build_train_config({**REQUIRED, "method": "zeroshot"})


def test_the_help_lists_every_flag_once_with_the_method_defaults() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--guidance-topk", "--attn-heads", "--logit-scale", "--adapter-blocks", "--no-guidance", "--from",
                 "--print-config"):
        assert result.output.count(flag) == 1, flag
    assert "--topk-or-all" not in result.output and "--module" not in result.output  # preset-only fields


# --------------------------------------------------------------------------------------------
# A run written by train.json schema 1 (tests/data/run_v1, made by the code before the change)


V1_OPTIONS = {"method": "sage", "epochs": 2, "batch_size": 4, "num_workers": 0, "augment": False, "device": "cpu",
              "lr": 0.05, "bottleneck": 2, "head_feature": "projected"}  # the head runs had before LIFT's


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    shutil.copytree(RUN_V1, tmp_path / "v1", ignore=shutil.ignore_patterns("*.md", "*.py"))
    return tmp_path / "v1"


def _v1_config(root: Path, **options) -> TrainConfig:
    return build_train_config({**V1_OPTIONS, "prepared": root / "prepared", "text_cache": root / "text",
                               "out": root / "run", **options})


def test_a_schema_1_record_reads_as_the_config_it_was(v1: Path) -> None:
    record = artifacts.read_record(v1 / "run", artifacts.TRAIN_RECORD)
    assert record["schema_version"] == 1 and "adapter" in record["config"]["model"]
    config = read_config(record)
    assert config.model == _v1_config(v1).model and config.loss == _v1_config(v1).loss
    assert config.optim == _v1_config(v1).optim and config.method == "sage"


def test_a_schema_1_run_is_still_this_run(v1: Path) -> None:
    result = run(_v1_config(v1))  # the same options: the same fingerprint, so nothing to do
    assert result.skipped and result.record["fingerprint"] == "%s" % artifacts.read_record(
        v1 / "run", artifacts.TRAIN_RECORD)["fingerprint"]


def test_a_schema_1_run_reports(v1: Path, tmp_path: Path) -> None:
    from sage_cli.report import ReportConfig
    from sage_cli.report import run as report

    result = report(ReportConfig(out=tmp_path / "report", runs=(v1 / "run",), split="val", device="cpu",
                                 num_workers=0))
    assert result.report["runs"][0]["method"] == "sage"


def test_a_schema_1_run_resumes_from_its_checkpoint(v1: Path) -> None:
    (v1 / "run" / artifacts.TRAIN_RECORD).unlink()  # interrupted after its first epoch's checkpoint
    (v1 / "run" / "adapter.safetensors").unlink()
    shutil.rmtree(v1 / "run" / "checkpoints" / "step-00000006")
    (v1 / "run" / "checkpoints" / "last.json").write_text(json.dumps(
        {"checkpoint": "step-00000003", "epoch": 1, "step_in_epoch": 0, "global_step": 3}))
    started: list[dict] = []
    result = run(_v1_config(v1, resume=True), TrainHooks(on_start=started.append))
    assert started[0]["start_step"] == 3 and started[0]["resumed_from"].endswith("step-00000003")
    assert result.record["steps"] == 6 and result.record["schema_version"] == artifacts.SCHEMA_VERSION == 2
