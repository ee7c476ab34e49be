"""Preset loading and flag precedence."""

from __future__ import annotations

import pytest

from sage_cli.config import load_yaml_mapping, merge_with_preset
from sage_cli.errors import SageError


def test_explicit_flags_win_over_preset_over_defaults(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("batch-size: 64\nlr: 0.05\n")
    merged = merge_with_preset(
        explicit={"lr": 0.1},
        defaults={"batch_size": 128, "lr": 0.01, "epochs": 10},
        preset=load_yaml_mapping(preset),
        preset_path=preset,
    )
    assert merged == {"batch_size": 64, "lr": 0.1, "epochs": 10}


def test_unknown_preset_key_names_file_and_key(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("bacth_size: 64\n")
    with pytest.raises(SageError, match=r"p\.yaml: unknown option 'bacth_size'"):
        merge_with_preset({}, {"batch_size": 1}, load_yaml_mapping(preset), preset)


def test_invalid_yaml_names_line(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("a: 1\nb: [unclosed\n")
    with pytest.raises(SageError, match=r"p\.yaml:\d+: invalid YAML"):
        load_yaml_mapping(preset)


def test_yaml_must_be_a_mapping_and_is_loaded_safely(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("- 1\n- 2\n")
    with pytest.raises(SageError, match="expected a mapping"):
        load_yaml_mapping(preset)
    preset.write_text("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SageError, match="invalid YAML"):
        load_yaml_mapping(preset)
