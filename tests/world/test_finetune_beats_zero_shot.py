"""On a small Shapes-LT, fine-tuning the shipped toy CLIP beats its zero-shot accuracy.

The shifted domain is where zero-shot is weak (about 12% top-1 over 80 classes): a test that
fails if training, the head init, the loss or the data wiring stops doing its job.
"""

from __future__ import annotations

import pytest

from sage_cli import artifacts
from sage_cli.prepare import compute_class_table
from sage_cli.world import TOY_MODEL
from sage_cli.world import TOY_WEIGHTS_V1 as TOY_WEIGHTS  # world v1's model on world v1's domain
from sage_cli.world.shapes_lt import prepare_shapes_lt

pytestmark = pytest.mark.slow


def _small_shapes_lt(out):
    manifest, names = prepare_shapes_lt(out, imbalance_ratio=10, max_count=40, val_per_class=1,
                                        test_per_class=6, seed=0, domain="hard")
    train = manifest[manifest["split"] == "train"]["label"].to_numpy()
    artifacts.write_table(out, artifacts.MANIFEST, manifest)
    artifacts.write_table(out, artifacts.CLASSES, compute_class_table(names, train, many=30, few=10))
    record = artifacts.build_record("prepare", {"dataset": "shapes-lt-small"}, dataset="shapes-lt-small",
                                    image_root=str(out.resolve()))
    artifacts.write_record(out, artifacts.PREPARE_RECORD, record)
    return out


def test_fine_tuning_beats_zero_shot_on_the_shifted_domain(tmp_path):
    from sage_cli.encode_text import EncodeTextConfig
    from sage_cli.encode_text import run as encode
    from sage_cli.report import ReportConfig
    from sage_cli.report import run as report
    from sage_cli.train import build_train_config
    from sage_cli.train import run as train

    if not TOY_WEIGHTS.is_file():
        pytest.skip("toy CLIP weights not shipped")
    prepared = _small_shapes_lt(tmp_path / "prepared")
    text = tmp_path / "text"
    encode(EncodeTextConfig(prepared=prepared, out=text, model=TOY_MODEL, pretrained=str(TOY_WEIGHTS),
                            templates="single", device="cpu"))
    run_dir = tmp_path / "lift"
    train(build_train_config({
        "prepared": prepared, "text_cache": text, "out": run_dir, "method": "lift", "epochs": 4,
        "batch_size": 32, "lr": 0.05, "device": "cpu", "num_workers": 0, "eval_every": 0, "seed": 0,
    }))
    result = report(ReportConfig(out=tmp_path / "report", runs=(run_dir,), zero_shot=prepared, text_cache=text,
                                 device="cpu", num_workers=0))
    zero_shot, lift = (r["metrics"]["top1"] for r in result.report["runs"])
    assert zero_shot < 0.3  # the shifted domain is hard for the frozen toy CLIP
    assert lift > zero_shot + 0.05, f"lift {lift:.3f} vs zero-shot {zero_shot:.3f}"
