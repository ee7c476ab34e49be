"""Train config: flag parsing, validation messages that name the flag, shipped presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_cli.commands.train import NOT_IN_PRESETS, option_defaults
from sage_cli.config import cli_names, load_yaml_mapping, merge_with_preset
from sage_cli.errors import SageError
from sage_cli.train import build_train_config, parse_blocks, resolve
from sage_cli.train.config import identity_of

PRESETS = sorted((Path(__file__).resolve().parents[2] / "sage_cli" / "presets").glob("*.yaml"))
REQUIRED = {"prepared": "p", "text_cache": "t", "out": "o", "method": "sage"}


@pytest.fixture(autouse=True)
def errors_name_flags():
    """These tests read the errors as `sage train` shows them: options named by their flags."""
    with cli_names():
        yield


def test_parse_blocks() -> None:
    assert parse_blocks("0-5") == (0, 1, 2, 3, 4, 5)
    assert parse_blocks("0,2,4") == (0, 2, 4)
    assert parse_blocks("0-1,7,9-10") == (0, 1, 7, 9, 10)
    assert parse_blocks(None) is None and parse_blocks("all") is None
    with pytest.raises(SageError, match="--blocks"):
        parse_blocks("5-2")
    with pytest.raises(SageError, match="--blocks"):
        parse_blocks("a,b")


def test_a_huge_blocks_range_is_refused_before_it_is_expanded() -> None:
    """0-99999999 once built a list of 10^8 ints (12 GB in 60 s) before any check."""
    with pytest.raises(SageError) as info:
        parse_blocks("0-99999999")
    assert str(info.value) == "--blocks: block 99999999 is beyond any image tower (sage takes indices below 1024)"
    with pytest.raises(SageError, match="block 100000000000000000000 is beyond"):
        parse_blocks("3,0-100000000000000000000")
    assert len(parse_blocks("0-1023")) == 1024


@pytest.mark.parametrize(("options", "message"), [
    ({"micro_batch_size": 0}, "--micro-batch-size must be >= 1; got 0"),  # was a ZeroDivisionError
    ({"seed": 10**20}, "--seed must be in 0..9223372036854775807; got 100000000000000000000"),  # torch overflow
    ({"seed": -1}, "--seed must be in 0..9223372036854775807; got -1"),
    ({"batch_size": 10**20}, "--batch-size must be at most 16777216; got 100000000000000000000"),  # islice
    ({"batch_size": 0}, "--batch-size must be a positive integer; got 0"),
])
def test_out_of_range_values_are_one_line_naming_the_value(options: dict, message: str) -> None:
    with pytest.raises(SageError) as info:
        build_train_config({**REQUIRED, **options})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_size": 8, "micro_batch_size": 3}, "--micro-batch-size"),
        ({"epochs": 0}, "--epochs"),
        ({"lr": 0.0}, "--lr"),
        ({"momentum": 1.0}, "--momentum"),
        ({"weight_decay": -1.0}, "--weight-decay"),
        ({"warmup_epochs": -1.0}, "--warmup-epochs"),
        ({"max_steps": 0}, "--max-steps"),
        ({"device": "tpu"}, "--device"),
        ({"compensation": "huge"}, "--compensation"),
        ({"method": "zeroshot"}, "--method"),
        ({"method": "lift", "guidance": True}, "--guidance"),
        ({"num_workers": -1}, "--num-workers"),
        ({"activation": "tanh"}, "--activation"),
        ({"attn_heads": 0}, "--attn-heads"),
        ({"logit_scale": 0.0}, "--logit-scale"),
        ({"ema": 1.0}, "--ema"),
        ({"blocks": "0,0"}, "--blocks"),
    ],
)
def test_invalid_option_names_the_flag(options: dict, flag: str) -> None:
    with pytest.raises(SageError, match=flag):
        build_train_config({**REQUIRED, **options})


def test_build_config_groups_options() -> None:
    config = build_train_config({**REQUIRED, "method": "lift", "batch_size": 16, "micro_batch_size": 4, "lr": 0.1,
                                 "blocks": "0-1", "compensation": "count", "seed": 3})
    assert config.data.accumulation_steps == 4 and config.data.micro_batch == 4
    assert config.model.peft.blocks == (0, 1) and config.method == "lift"
    assert config.loss.compensation == "count" and config.optim.lr == 0.1 and config.run.seed == 3
    assert config.to_dict()["run"]["out"] == "o"
    assert "out" not in identity_of(config)["run"] and "prepared" not in identity_of(config)["data"]


def test_command_defaults_match_dataclass_defaults() -> None:
    """The CLI's defaults and the dataclasses' must agree (two places, one test)."""
    defaults = option_defaults()
    built = build_train_config({**defaults, **REQUIRED})
    # The Python API (the method's complete config, from resolve) builds what the CLI does.
    plain = resolve("sage", {"prepared": "p", "text_cache": "t", "out": "o"})
    assert built.data == plain.data and built.optim == plain.optim and built.run == plain.run
    assert built.model == plain.model and built.loss == plain.loss
    assert built.loss.loss == "la" and built.loss.compensation == "semantic"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_shipped_preset_loads_and_validates(preset: Path) -> None:
    data = load_yaml_mapping(preset)
    assert not set(k.replace("-", "_") for k in data) & set(NOT_IN_PRESETS)
    defaults = {k: v for k, v in option_defaults().items() if k not in NOT_IN_PRESETS}
    merged = merge_with_preset({k: v for k, v in REQUIRED.items() if k != "out"}, defaults, data, preset)
    merged.setdefault("out", "o")
    config = build_train_config(merged)
    assert config.method in ("sage", "lift", "linear")
    header = preset.read_text().splitlines()[0]
    assert header.startswith("#") and "sage train" in preset.read_text().split("\n\n")[0]


def test_presets_shipped() -> None:
    names = {p.name for p in PRESETS}
    assert {"imagenet_lt.yaml", "places_lt.yaml", "inat2018.yaml", "cifar100_lt.yaml", "synthetic.yaml"} <= names
