"""torchrun + FSDP2 on CPU (gloo): two processes make the same update as one, with the HF engine and with vLLM."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_weights, needs_vllm, read_metrics

ROOT = Path(__file__).resolve().parents[1]
STEP = (
    "--steps 1 --prompts-per-step 8 --group-size 4 --mini-batches 4 --micro-batch-size 2 "
    "--max-new-tokens 64 --eval-every 0 --reward random --lr 1e-3 --engine hf"
).split()


def launch(args: list[str], processes: int, toy_model: str) -> subprocess.CompletedProcess:
    # toy_model: the fixture builds the toy model first, so that the processes find it in the cache
    command = (
        [sys.executable]
        + (["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else [])
        + args
    )
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def checkpoint_weights(run: Path) -> dict:
    return load_weights(next(run.glob("checkpoint-*")))


@pytest.mark.slow
def test_two_processes_make_the_same_update_as_one(tmp_path, toy_model):
    rollouts = tmp_path / "rollouts.json"
    replay = [str(ROOT / "tests" / "replay_run.py"), str(rollouts)]
    # greedy evaluation before and after the step: each process decodes its share with the sampling loop, whose
    # forwards go on until every process is done (FSDP's forwards are collective)
    evaluation = ["--eval-every", "1", "--eval-size", "40"]
    launch(replay + STEP + evaluation + ["--out", str(tmp_path / "one")], 1, toy_model)  # samples, records the rollouts
    launch(
        replay + STEP + evaluation + ["--out", str(tmp_path / "two")], 2, toy_model
    )  # replays them, half per process
    one, two, base = checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "two"), load_weights(toy_model)
    assert one.keys() <= two.keys()  # FSDP's gathered state also names the tied output embedding (the same tensor)
    if "lm_head.weight" in two and "lm_head.weight" not in one:
        assert torch.equal(two["lm_head.weight"], two["model.embed_tokens.weight"])
    moved = max((one[name] - base[name]).abs().max().item() for name in one)
    differs = max((one[name] - two[name]).abs().max().item() for name in one)
    assert moved > 1e-3  # the step changed the weights (4 Adam updates at lr 1e-3)...
    # ...and two processes changed them as one did, to float rounding, which Adam enlarges where a gradient is near 0
    assert differs < 1e-4  # (measured: 4.5e-6 on the earlier toy, 1.9e-5 on this one; one update moves up to 1e-3)
    [base_one, row_one], [base_two, row_two] = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert base_one == base_two  # the base model's greedy answers, decoded whole in one process or split over two
    assert row_one["eval_accuracy"] == row_two["eval_accuracy"]
    assert row_one["eval_code_frequency"] == row_two["eval_code_frequency"]
    for key in ("reward_mean", "accuracy", "code_frequency", "response_length", "skipped_updates"):
        assert row_one[key] == row_two[key], key
    # Adam's update ignores a gradient's scale: the gradient norm is what shows that the loss is normalised alike
    for key in ("clip_fraction", "approx_kl", "entropy", "mean_token_prob", "grad_norm"):
        assert row_one[key] == pytest.approx(row_two[key], rel=1e-4, abs=1e-7), key


@pytest.mark.slow
@needs_vllm()
def test_two_processes_with_colocated_vllm_engines(tmp_path, toy_model):
    args = (
        [str(ROOT / "rlvr_min.py")]
        + STEP[:-1]
        + ["vllm", "--steps", "2", "--eval-every", "2", "--eval-size", "20", "--out", str(tmp_path / "run")]
    )
    result = launch(args, 2, toy_model)
    rows = read_metrics(tmp_path / "run")
    assert [row["step"] for row in rows] == [0, 1, 2]
    assert rows[2]["response_length"] > 0 and "eval_accuracy" in rows[2]
    assert result.stdout.count("step    2 |") == 1  # one log line per step: process 0 logs
    assert not torch.equal(
        checkpoint_weights(tmp_path / "run")["model.norm.weight"], load_weights(toy_model)["model.norm.weight"]
    )
