"""The laboratory (lab.py): a sweep of trainings that survives interruption, its summaries, and its bad input."""

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import lab

SWEEP_FLAGS = (
    "--steps 2 --prompts-per-step 4 --group-size 4 --mini-batches 2 --max-new-tokens 48 "
    "--eval-every 2 --eval-size 20 --engine hf"
).split()


def test_a_sweep_interrupted_and_run_again_finishes_cleanly(tmp_path, toy_model, monkeypatch):
    import rlvr_min

    out, calls = tmp_path / "sweep", []
    real_train = rlvr_min.train

    def interrupted_train(config, resume=False):
        calls.append(config.out)
        if len(calls) == 3:  # the third run dies before its last step is recorded: its folder holds an unfinished run
            real_train(config)
            metrics = Path(config.out) / "metrics.jsonl"
            metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-1]))
            raise KeyboardInterrupt
        return real_train(config, resume)

    monkeypatch.setattr(rlvr_min, "train", interrupted_train)
    with pytest.raises(KeyboardInterrupt):
        lab.sweep(["clip", "one-update"], [0, 1], out, flags=SWEEP_FLAGS, log=lambda _: None)
    partial = json.loads((out / "sweep.json").read_text())  # whole JSON of the two finished runs, never half a file
    assert [(r["condition"], r["seed"]) for r in partial["runs"]] == [("clip", 0), ("clip", 1)]
    assert not list(out.glob("*.tmp*"))

    calls.clear()
    result = lab.sweep(["clip", "one-update"], [0, 1], out, flags=SWEEP_FLAGS, log=lambda _: None)
    assert calls == [str(out / "one-update-seed0"), str(out / "one-update-seed1")]  # finished runs are read, not rerun
    assert [(r["condition"], r["seed"]) for r in result["runs"]] == [
        ("clip", 0),
        ("clip", 1),
        ("one-update", 0),
        ("one-update", 1),
    ]
    assert json.loads((out / "sweep.json").read_text()) == json.loads(json.dumps(result))
    assert (out / "sweep.png").stat().st_size > 1000
    # each run's figures are its own metrics': the change is the last greedy evaluation minus the base model's
    for run in result["runs"]:
        rows = [json.loads(line) for line in (Path(run["run"]) / "metrics.jsonl").read_text().splitlines()]
        evaluated = [row for row in rows if "eval_accuracy" in row]
        assert [p["step"] for p in run["trajectory"]] == [0, 2]
        assert run["change"]["code_frequency"] == pytest.approx(
            evaluated[-1]["eval_code_frequency"] - evaluated[0]["eval_code_frequency"]
        )
        assert run["change"]["accuracy"] == pytest.approx(
            evaluated[-1]["eval_accuracy"] - evaluated[0]["eval_accuracy"]
        )
    one_update = json.loads((out / "one-update-seed0" / "config.json").read_text())
    assert (one_update["mini_batches"], one_update["epochs"], one_update["reward"]) == (1, 1, "random")
    summary = result["summary"]["clip"]
    changes = sorted(run["change"]["code_frequency"] for run in result["runs"] if run["condition"] == "clip")
    assert summary["code_frequency_change"] == {
        "median": pytest.approx(sum(changes) / 2),
        "min": changes[0],
        "max": changes[1],
    }


def test_a_finished_run_is_read_after_a_move_and_never_deleted_for_another_configuration(tmp_path, toy_model):
    first = lab.sweep(["clip"], [0], tmp_path / "a", flags=SWEEP_FLAGS, log=lambda _: None, quiet=True)
    (tmp_path / "a").rename(tmp_path / "b")
    runs = []
    moved = lab.sweep(["clip"], [0], tmp_path / "b", flags=SWEEP_FLAGS, log=runs.append, quiet=True)
    assert runs == [] and moved["runs"][0]["change"] == first["runs"][0]["change"]  # read, not run again
    metrics = (tmp_path / "b" / "clip-seed0" / "metrics.jsonl").read_text()
    with pytest.raises(click.UsageError, match=r"clip-seed0 holds a finished run with lr=0.0001, not 0.001; move it"):
        lab.sweep(["clip"], [0], tmp_path / "b", flags=[*SWEEP_FLAGS, "--lr", "1e-3"], log=lambda _: None)
    assert (tmp_path / "b" / "clip-seed0" / "metrics.jsonl").read_text() == metrics


def test_sweep_with_an_unknown_condition_fails_in_one_line(tmp_path):
    result = CliRunner().invoke(lab.cli, ["sweep", "--condition", "clipped", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "Error: unknown condition 'clipped'; choose one of: clip, no-clip, one-update, ground-truth" in result.output
    assert not (tmp_path / "s").exists()
