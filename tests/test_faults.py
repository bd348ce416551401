"""Faults: a killed run resumes to the same metrics, SIGTERM/Ctrl-C stop cleanly, checkpoints are atomic and pruned
only when complete, and non-finite losses stop the run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import load_weights, read_metrics

import infra
import rlvr_min

ROOT = Path(__file__).resolve().parents[1]
RUN = (
    "--prompts-per-step 8 --group-size 4 --mini-batches 4 --max-new-tokens 64 --eval-every 3 "
    "--eval-size 20 --reward random --engine hf"
).split()


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "rlvr_min.py"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, "the run ended before the test could interrupt it"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_killed_run_resumes_to_the_same_metrics(tmp_path, toy_model):
    flags = RUN + ["--steps", "6", "--save-every", "2"]
    whole = start(flags + ["--out", str(tmp_path / "whole")])
    assert whole.wait(timeout=600) == 0, whole.stdout.read()

    killed = start(flags + ["--out", str(tmp_path / "killed")])
    wait_for(lambda: (tmp_path / "killed" / "resume-000002").exists(), killed)
    killed.kill()  # SIGKILL: no chance to clean up
    assert killed.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "checkpoint-000006").exists()
    (tmp_path / "killed" / ".checkpoint-crashed").mkdir()  # what a crash in the middle of a save leaves

    resumed = subprocess.run(
        [sys.executable, str(ROOT / "rlvr_min.py"), "--resume", str(tmp_path / "killed")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout
    assert read_metrics(tmp_path / "killed", timings=False) == read_metrics(tmp_path / "whole", timings=False)
    assert not (tmp_path / "killed" / ".checkpoint-crashed").exists()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_say_how_to_resume(signal_number, tmp_path, toy_model):
    out = tmp_path / "run"
    process = start(RUN + ["--steps", "500", "--out", str(out)])
    wait_for(lambda: (out / "metrics.jsonl").exists() and len(read_metrics(out)) >= 2, process)  # steps 0 and 1 done
    process.send_signal(signal_number)
    output = process.communicate(timeout=300)[0]
    assert process.returncode != 0
    last_step = read_metrics(out)[-1]["step"]
    assert f"stopped by {signal.Signals(signal_number).name} after step {last_step}" in output
    assert f"continue with: python rlvr_min.py --resume {out}" in output.splitlines()[-1]
    assert infra.latest_checkpoint(out).name == f"resume-{last_step:06d}"

    resumed = CliRunner().invoke(rlvr_min.main, ["--resume", str(out), "--steps", str(last_step + 1)])
    assert resumed.exit_code == 0, resumed.output
    assert [row["step"] for row in read_metrics(out)][-2:] == [last_step, last_step + 1]


def test_a_crash_while_saving_leaves_the_previous_checkpoint_to_resume_from(tmp_path, toy_model, monkeypatch):
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def crash_on_second_save(*args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            raise OSError("disk full")
        real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_on_second_save)
    result = CliRunner().invoke(rlvr_min.main, RUN + ["--steps", "4", "--save-every", "2", "--out", str(out)])
    assert isinstance(result.exception, OSError)
    assert [path.name for path in out.glob("resume-*")] == ["resume-000002"]
    monkeypatch.setattr(torch, "save", real_save)
    resumed = CliRunner().invoke(rlvr_min.main, ["--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert [row["step"] for row in read_metrics(out)] == [0, 1, 2, 3, 4]
    assert not list(out.glob(".checkpoint-*"))


def test_keep_last_keeps_the_newest_checkpoints_and_only_the_newest_resume_state(tmp_path, toy_model, monkeypatch):
    monkeypatch.setattr(infra, "compute_dtype", lambda: torch.bfloat16)  # as on a GPU
    out = tmp_path / "run"
    result = CliRunner().invoke(
        rlvr_min.main,
        RUN + ["--steps", "4", "--save-every", "1", "--keep-last", "2", "--eval-every", "0", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir() if "checkpoint" in path.name or "resume" in path.name) == [
        "checkpoint-000003",
        "checkpoint-000004",
        "resume-000004",
    ]
    state = json.loads((out / "resume-000004" / "trainer_state.json").read_text())
    assert state["step"] == 4 and {"data_rng", "reward_rng"} <= set(state)
    evaluation, resume = load_weights(out / "checkpoint-000004"), load_weights(out / "resume-000004")
    assert (
        not (out / "checkpoint-000004" / "optimizer.pt").exists() and (out / "resume-000004" / "optimizer.pt").exists()
    )
    for name, tensor in resume.items():  # the evaluation weights: the resume state's, in the compute dtype only
        assert tensor.dtype == torch.float32 and evaluation[name].dtype == torch.bfloat16
        assert torch.equal(evaluation[name], tensor.to(torch.bfloat16)), name


def test_non_finite_losses_skip_updates_and_stop_the_run(tmp_path, toy_model, monkeypatch):
    real_loss = rlvr_min.policy_loss

    def poisoned(*args, **kwargs):
        loss, stats = real_loss(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(rlvr_min, "policy_loss", poisoned)
    closed = []
    monkeypatch.setattr(infra.Tracker, "close", lambda tracker: closed.append(tracker))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        rlvr_min.main, RUN + ["--steps", "20", "--eval-every", "0", "--save-every", "0", "--out", str(out)]
    )
    assert result.exit_code != 0
    assert "stopped at step 3: 3 steps in a row had only non-finite losses or gradients" in result.output
    rows = read_metrics(out)
    assert [row["skipped_updates"] for row in rows] == [4, 4, 4]  # every update of every step skipped, and logged
    assert [row["grad_norm"] for row in rows] == [0, 0, 0]
    assert len(closed) == 1  # the tracker (TensorBoard, W&B) is closed even when the run stops early
