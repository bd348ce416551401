"""The memory check of a GPU run, on a CPU: the estimate from a model's config.json, before any weights load."""

import json
import time

import click
import pytest
from click.testing import CliRunner

import infra
import lab
import rlvr_min

# Qwen2.5-Math-7B's config.json, as its model card publishes it (the shapes the estimate reads)
QWEN_MATH_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
H200, H100 = 150_100_000_000, 85_000_000_000  # 139.8 GiB and 79.2 GiB, as torch reports them


@pytest.fixture
def seven_b(tmp_path, toy_model):
    """A directory holding only a 7B config.json and the toy tokenizer: no weights at all."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(toy_model).save_pretrained(tmp_path / "7b")
    (tmp_path / "7b" / "config.json").write_text(json.dumps(QWEN_MATH_7B))
    return str(tmp_path / "7b")


def estimate(model: str, flags: str, processes: int = 1, gpu: int = H200) -> dict:
    from transformers import AutoConfig

    config = lab.run_config(["--model", model, *flags.split()])
    model_config = AutoConfig.from_pretrained(model)
    parameters = infra.parameter_count(model_config, False)
    return infra.memory_estimate(config, model_config, parameters, processes, gpu)


def test_the_parameter_count_is_the_7bs(seven_b):
    from transformers import AutoConfig

    assert infra.parameter_count(AutoConfig.from_pretrained(seven_b), False) == pytest.approx(7.62e9, rel=0.005)


def test_a_7b_that_cannot_fit_stops_in_one_line_with_the_command_that_fits(seven_b, monkeypatch, tmp_path):
    monkeypatch.setattr(infra, "gpu_memory", lambda: H100)
    started = time.monotonic()
    result = CliRunner().invoke(rlvr_min.main, ["--model", seven_b, "--engine", "hf", "--out", str(tmp_path / "run")])
    assert time.monotonic() - started < 30
    assert result.exit_code == 2
    [error] = {line for line in (result.output + result.stderr).splitlines() if line.startswith("Error: ")}
    assert error.startswith("Error: this run needs about ") and "training state 122" in error
    assert "it fits" in error and "torchrun --nproc-per-node" in error
    assert not (tmp_path / "run").exists()  # nothing loaded, nothing written


def test_the_single_process_7b_fits_one_h200_with_vllm_asleep_and_checkpointing(seven_b, monkeypatch):
    monkeypatch.setattr(infra, "gpu_memory", lambda: H200)
    fitting = "--engine vllm --vllm-sleep --gradient-checkpointing --vllm-gpu-memory-utilization 0.3"
    parts = estimate(seven_b, fitting)
    assert parts["training state"] == pytest.approx(122e9, rel=0.01) and parts["peak"] <= H200
    infra.check_memory(lab.run_config(["--model", seven_b, *fitting.split()]), 1)
    with pytest.raises(click.UsageError) as error:  # the paper's flags with vLLM: the suggestion is the one above
        infra.check_memory(lab.run_config(["--model", seven_b, "--engine", "vllm"]), 1)
    assert error.value.message.endswith(
        "with: python rlvr_min.py ... --gradient-checkpointing --vllm-sleep --vllm-gpu-memory-utilization 0.3"
    )


def test_the_estimate_moves_as_each_knob_should(seven_b):
    base = estimate(seven_b, "--engine vllm")
    assert estimate(seven_b, "--engine vllm --gradient-checkpointing")["activations"] < base["activations"] / 5
    assert estimate(seven_b, "--engine vllm", processes=8)["training state"] == pytest.approx(
        base["training state"] / 8
    )
    assert estimate(seven_b, "--engine vllm --vllm-sleep")["peak"] < base["peak"]
    assert estimate(seven_b, "--engine vllm --kl-coef 0.1")["training state"] == pytest.approx(
        base["training state"] * 1.25
    )
    hf = estimate(seven_b, "--engine hf")  # 64 x 16 rollouts of 4,096 tokens: a bf16 KV cache of ~240 GB
    assert hf["KV cache"] == pytest.approx(64 * 16 * 4096 * 28 * 2 * 512 * 2)
