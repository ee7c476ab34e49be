"""`sage train` through the CLI: presets with explicit overrides, --json, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sage_cli import artifacts
from sage_cli.cli import app

runner = CliRunner()


def _args(prepared: Path, text: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--prepared", str(prepared), "--text-cache", str(text), "--method", "linear",
            "--out", str(out), "--device", "cpu", "--num-workers", "0", *extra]


def test_preset_supplies_defaults_and_explicit_flags_win(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                         tmp_path: Path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("epochs: 3\nbatch-size: 16\nlr: 0.5\nmax_steps: 4\nlog_every: 1\n")
    out = tmp_path / "run"
    result = runner.invoke(app, _args(synthetic_prepared, synthetic_text_cache, out, "--config", str(preset),
                                      "--lr", "0.02", "--max-steps", "2", "--json"))
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record == artifacts.read_record(out, artifacts.TRAIN_RECORD)
    config = record["config"]
    assert config["optim"]["epochs"] == 3 and config["data"]["batch_size"] == 16  # from the preset
    assert config["optim"]["lr"] == 0.02 and config["run"]["max_steps"] == 2  # explicit flags win
    assert record["steps"] == 2


def test_shipped_preset_keeps_the_per_method_loss(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                  tmp_path: Path) -> None:
    preset = Path(__file__).resolve().parents[2] / "sage_cli" / "presets" / "synthetic.yaml"
    runs = {}
    for method, extra in (("linear", ()), ("sage", ()), ("lift", ("--compensation", "count"))):
        out = tmp_path / method
        args = _args(synthetic_prepared, synthetic_text_cache, out, "--config", str(preset), "--max-steps", "1",
                     "--blocks", "1", "--activation", "gelu", "--ema", "0.5", *extra)
        args[args.index("linear")] = method
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        runs[method] = artifacts.read_record(out, artifacts.TRAIN_RECORD)["config"]
    assert runs["linear"]["loss"]["compensation"] == "none"  # LA for the baselines
    assert runs["sage"]["loss"]["compensation"] == "semantic" and runs["sage"]["loss"]["ema"] == 0.5
    assert runs["lift"]["loss"]["compensation"] == "count"  # explicit flag wins
    adapter = runs["sage"]["model"]["peft"]  # train.json schema 2: the PEFT part of the model
    assert adapter["blocks"] == [1] and adapter["activation"] == "gelu"
    assert runs["sage"]["data"]["batch_size"] == 32  # from the preset


def test_unknown_preset_key_is_one_line_error(synthetic_prepared: Path, synthetic_text_cache: Path,
                                              tmp_path: Path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("epoch: 3\n")
    result = runner.invoke(app, _args(synthetic_prepared, synthetic_text_cache, tmp_path / "run",
                                      "--config", str(preset)))
    assert result.exit_code == 1
    assert "unknown option 'epoch'" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_summary_prints_trainable_params_and_protocol(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                      tmp_path: Path) -> None:
    result = runner.invoke(app, _args(synthetic_prepared, synthetic_text_cache, tmp_path / "run", "--max-steps", "1"))
    assert result.exit_code == 0, result.output
    record = artifacts.read_record(tmp_path / "run", artifacts.TRAIN_RECORD)
    assert f"trainable parameters: {record['trainable_params']:,}" in result.output
    assert "bicubic interpolation" in result.output and "centre crop" in result.output
    quiet = runner.invoke(app, ["--quiet", *_args(synthetic_prepared, synthetic_text_cache, tmp_path / "q",
                                                  "--max-steps", "1")])
    # --quiet: no summary, no progress; the final result as one line (issue 13: it printed nothing).
    assert quiet.exit_code == 0 and "trainable parameters" not in quiet.output
    lines = quiet.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tmp_path / 'q'}: ") and lines[0].endswith(", 1 steps")


def test_bad_flag_is_one_line_error(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, _args(synthetic_prepared, synthetic_text_cache, tmp_path / "run",
                                      "--batch-size", "8", "--micro-batch-size", "3"))
    assert result.exit_code == 1 and "--micro-batch-size 3 must divide --batch-size 8" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (("--micro-batch-size", "0"), "error: --micro-batch-size must be >= 1; got 0"),
    (("--seed", "99999999999999999999"), "error: --seed must be in 0..9223372036854775807; got 99999999999999999999"),
    (("--batch-size", "99999999999999999999"), "error: --batch-size must be at most 16777216; got 99999999999999999999"),
    (("--method", "lift", "--blocks", "0-99999999"),
     "error: --blocks: block 99999999 is beyond any image tower (sage takes indices below 1024)"),
    (("--method", "lift", "--bottleneck", "100000000"),
     "error: --bottleneck 100000000 exceeds the image tower's width (64); choose 1..64 (default: LIFT's rule)"),
])
def test_red_team_values_are_one_line_and_create_nothing(synthetic_prepared: Path, synthetic_text_cache: Path,
                                                         tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    """Issue 19: each was a traceback (ZeroDivisionError, torch/islice overflow, an allocation of
    25.6 GB) or a runaway (--blocks 0-99999999 grew to 12 GB in 60 s)."""
    args = _args(synthetic_prepared, synthetic_text_cache, tmp_path / "run", "--max-steps", "1")
    if "--method" in extra:
        args[args.index("--method") + 1] = extra[1]
        extra = extra[2:]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "message"), [
    (b"epochs: 3\nlr: \xff\n", "preset.yaml:2: not UTF-8 text (byte 0xff); save the preset as UTF-8"),
    (b"blocks: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
     "preset.yaml: nested too deeply to be a preset (a preset maps option names to values)"),
])
def test_unreadable_preset_is_one_line(synthetic_prepared: Path, synthetic_text_cache: Path, tmp_path: Path,
                                       text: bytes, message: str) -> None:
    """A preset of bad UTF-8 (UnicodeDecodeError) or a list 100,000 deep (RecursionError) gave tracebacks."""
    preset = tmp_path / "preset.yaml"
    preset.write_bytes(text)
    result = runner.invoke(app, _args(synthetic_prepared, synthetic_text_cache, tmp_path / "run",
                                      "--config", str(preset)))
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: {preset.parent}/{message}"
    assert not (tmp_path / "run").exists()


def test_without_a_terminal_each_logging_step_prints_a_plain_line(synthetic_prepared: Path,
                                                                  synthetic_text_cache: Path, tmp_path: Path) -> None:
    # CliRunner's stdout is no terminal (a SLURM log, `> log`): the progress bar never shows there
    out = tmp_path / "run"
    result = runner.invoke(app, _args(synthetic_prepared, synthetic_text_cache, out, "--batch-size", "8",
                                      "--epochs", "2", "--eval-every", "0", "--log-every", "4"))
    assert result.exit_code == 0, result.output
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert [r["step"] for r in train] == [4, 8, 12]  # 6 steps per epoch; the last step is always logged
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert lines == [f"step {r['step']}/12 (epoch {r['epoch'] + 1}): loss {r['loss']:.4f}, lr {r['lr']:.3g}, "
                     f"{r['images_per_s']:.0f} images/s" for r in train]
    assert lines[0].startswith("step 4/12 (epoch 1): loss ") and lines[2].startswith("step 12/12 (epoch 2): ")
    quiet = runner.invoke(app, ["-q", *_args(synthetic_prepared, synthetic_text_cache, tmp_path / "q",
                                             "--max-steps", "2", "--log-every", "1")])
    assert quiet.exit_code == 0 and not [line for line in quiet.stdout.splitlines() if line.startswith("step ")]
