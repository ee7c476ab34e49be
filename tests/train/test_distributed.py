"""Data-parallel training: the per-rank data split; DDP's gradient sum, the gathered compensation statistics
and the sharded frozen-feature pass in a 2-process gloo job; 2 gloo processes under torchrun matching one
process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sage_cli.data import BadSample, StepBatchSampler, collate_samples, compute_epoch_order
from sage_cli.train import build_train_config, run
from sage_cli.train.distributed import DistContext, read_torchrun_env

from . import gloo_ranks as gloo_ranks_job


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_every_micro_batch_of_the_one_process_order(world: int) -> None:
    # 21 samples, batch 8, micro 4: steps of 8, 8, 5 images; the last micro-batch holds 1 image
    single = list(StepBatchSampler(21, seed=3, batch_size=8, micro_batch_size=4))
    ranks = [list(StepBatchSampler(21, seed=3, batch_size=8, micro_batch_size=4, rank=r, world_size=world))
             for r in range(world)]
    assert all(len(r) == len(single) == 6 for r in ranks)  # every rank takes part in every micro-batch
    for index, batch in enumerate(single):
        shards = [r[index] for r in ranks]
        assert sorted(sum(shards, [])) == sorted(batch)  # disjoint, and together the same images
        assert shards == [batch[r::world] for r in range(world)]  # strided
    assert ranks[world - 1][-1] == []  # one image for `world` ranks: the others get none
    order, seeds = compute_epoch_order(21, 3, 0)
    assert [k for b in single for k in b] == list(zip(order.tolist(), seeds.tolist()))


def test_step_sampler_resumes_mid_epoch() -> None:
    sampler = StepBatchSampler(21, seed=1, batch_size=8, micro_batch_size=4, rank=1, world_size=2)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3, start_step=1)
    assert list(sampler) == full[2:] and len(sampler) == 4
    assert [sampler.micro_batches_in_step(s) for s in range(3)] == [2, 2, 2] and sampler.step_size(2) == 5


def test_collate_drops_unreadable_samples() -> None:
    image = torch.zeros(3, 2, 2)
    batch = collate_samples([(image, 1, 10), BadSample("a.png", "bad"), (image, 2, 11)])
    assert batch.images.shape == (2, 3, 2, 2) and batch.labels.tolist() == [1, 2] and batch.skipped == ("a.png",)
    empty = collate_samples([BadSample("b.png", "bad")])
    assert empty.images is None and len(empty.labels) == 0 and empty.skipped == ("b.png",)


def test_single_process_context_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert read_torchrun_env() is None
    context = DistContext()
    assert not context.enabled and context.is_main and context.sum_host([3, 1]) == [3, 1]
    assert context.sum_host_floats([3, 0, 2.5]) == [3.0, 0.0, 2.5]
    assert context.gather_objects({"a"}) == [{"a"}] and context.all_true(False) is False
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert read_torchrun_env() == (2, 4, 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("method", [{"method": "sage", "compensation": "semantic"}, {"method": "lift", "loss": "cb"}],
                         ids=["sage-semantic", "lift-cb"])
def test_two_gloo_processes_match_one_process(synthetic_prepared: Path, synthetic_text_cache: Path,
                                              tmp_path: Path, method: dict) -> None:
    # 7 steps cross the epoch end (step 6 holds 5 images: micro-batches of 4 and 1, so rank 1 gets an
    # empty one) and the sharded eval; semantic compensation exercises the all-reduced statistics,
    # cb a step normaliser (the class weights) summed over ranks.
    options = {**method, "batch_size": 8, "micro_batch_size": 4, "max_steps": 7, "lr": 0.05,
               "log_every": 1, "num_workers": 0, "device": "cpu", "seed": 0}
    single = run(build_train_config({"prepared": synthetic_prepared, "text_cache": synthetic_text_cache,
                                     "out": tmp_path / "one", **options}))
    out = tmp_path / "two"
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in options.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
               "--master-addr=127.0.0.1", f"--master-port={_free_port()}", "-m", "sage_cli", "train",
               "--prepared", str(synthetic_prepared), "--text-cache", str(synthetic_text_cache), "--out", str(out),
               *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    record = json.loads((out / "train.json").read_text())
    assert record["world_size"] == 2 and record["distributed_backend"] == "gloo"
    assert record["steps"] == 7 and record["images_seen"] == single.record["images_seen"] == 6 * 8 - 3 + 8
    a, b = load_file(str(single.out / "adapter.safetensors")), load_file(str(out / "adapter.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=0), (name, float((a[name] - b[name]).abs().max()))
    initial = load_file(str(single.out / "checkpoints" / "step-00000006" / "adapter.safetensors"))
    assert float((a["head.weight"] - initial["head.weight"]).abs().max()) > 1e-4  # step 7 moved the weights
    # Weights within 1e-5 (gradients summed in another order): 8 val predictions may differ only on a near-tie.
    assert abs(record["final_eval"]["top1"] - single.record["final_eval"]["top1"]) <= 1 / 8 + 1e-9
    assert record["final_eval"]["samples"] == 8
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in lines if e["kind"] == "train"]
    expected = [e for e in (json.loads(x) for x in (single.out / "metrics.jsonl").read_text().splitlines())
                if e["kind"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 8))  # written once, by rank 0
    assert [e["loss"] for e in train] == pytest.approx([e["loss"] for e in expected], abs=1e-5)
    state = torch.load(out / "checkpoints" / "step-00000006" / "state.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2


@pytest.fixture(scope="module")
def gloo_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """What each rank of a 2-process gloo job saw (tests/train/gloo_ranks.py); started once for the checks below."""
    out = tmp_path_factory.mktemp("gloo")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, gloo_ranks_job.__file__, str(r), str(out / "store"), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(gloo_ranks_job.WORLD)]
    try:
        outputs = [rank.communicate(timeout=120)[0] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()  # a rank left waiting on the other's collective
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(o[-3000:] for o in outputs)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(gloo_ranks_job.WORLD)]


def test_ddp_sums_the_step_gradients_of_every_rank(gloo_ranks: list[dict]) -> None:
    x, y = gloo_ranks_job.ddp_inputs()
    module = gloo_ranks_job.StepLoss()
    module(x[:4], y[:4], 5).backward()  # one process: the same two micro-batches
    module(x[4:], y[4:], 5).backward()
    for rank in gloo_ranks:
        seen = rank["ddp"]
        assert seen["wrapped"] == "DistributedDataParallel" and seen["ignored"] == ["net.0.bias", "net.0.weight"]
        assert seen["grads"]["net.0.weight"] is None  # the frozen layer: no gradient, not in DDP's buckets
        for name in ("net.2.weight", "net.2.bias"):
            torch.testing.assert_close(seen["grads"][name], dict(module.named_parameters())[name].grad,
                                       rtol=0, atol=1e-6)


def test_compensation_statistics_of_two_ranks_match_one_process(gloo_ranks: list[dict]) -> None:
    reference = gloo_ranks_job.semantic_estimator()
    for features, labels in gloo_ranks_job.compensation_batches():
        reference.update(features, labels)
    assert bool(reference.seen.all()) and float(reference.delta().abs().max()) > 0  # a delta that moved
    for rank in gloo_ranks:
        seen = rank["compensation"]
        torch.testing.assert_close(seen["delta"], reference.delta(), rtol=0, atol=1e-6)
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(seen["state"][name], value, rtol=0, atol=1e-6)
        # rank 0 sent one row of 0s, rank 1 two rows of 1s: concatenated in rank order, unpadded
        assert torch.equal(seen["gathered"], torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))


def test_the_sharded_frozen_feature_pass_equals_one_process(gloo_ranks: list[dict]) -> None:
    features, labels, head = gloo_ranks_job.frozen_features(DistContext())
    assert labels.tolist() == [0, 1, 2, 0, 2, 0] and features.shape == head.shape == (6, 5)  # sample 4 unreadable
    for rank in gloo_ranks:
        sharded_features, sharded_labels, sharded_head = rank["frozen"]
        assert torch.equal(sharded_labels, labels)
        torch.testing.assert_close(sharded_features, features, rtol=0, atol=1e-6)
        torch.testing.assert_close(sharded_head, head, rtol=0, atol=1e-6)


def test_shards_are_contiguous_blocks_in_rank_order() -> None:
    blocks = [DistContext(rank=r, world_size=3).shard(7) for r in range(3)]
    assert blocks == [range(0, 2), range(2, 4), range(4, 7)] and DistContext().shard(7) == range(7)
