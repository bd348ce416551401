"""The vLLM engine's calls, checked with a stand-in for vLLM on a CPU: sleep mode in TRL's order, the version check."""

import sys
import types

import click
import pytest
import torch

import infra
import rlvr_min


class StandInLLM:
    """Records what the engine asks of vLLM, in order; generates one token per sample."""

    calls: list = []

    def __init__(self, **kwargs):
        self.calls.clear()
        self.calls.append(("start", kwargs["enable_sleep_mode"]))

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append("generate")
        sample = types.SimpleNamespace(token_ids=[7])
        return [types.SimpleNamespace(outputs=[sample] * params.n) for _ in prompts]

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags)))

    def collective_rpc(self, method, kwargs=None):
        kwargs = kwargs or {}
        if "weights_iterator" in kwargs:
            kwargs = {"weights_iterator": dict(kwargs["weights_iterator"])}  # drain it, as vLLM does
        self.calls.append((getattr(method, "__name__", method), tuple(kwargs)))

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")


@pytest.fixture
def stand_in(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = StandInLLM, lambda **kwargs: types.SimpleNamespace(**kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(infra, "check_vllm", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: StandInLLM.calls.append("empty_cache"))
    return StandInLLM.calls


def test_sleep_mode_frees_everything_after_generating_and_wakes_in_trls_order(stand_in):
    model = torch.nn.Linear(2, 2)
    engine = infra.VLLMEngine("model", rlvr_min.Config(vllm_sleep=True), torch.float32, model)
    rollout = lambda: engine.generate([[1, 2]], 2, 1.0, 1.0, 4, seed=0)
    assert rollout() == [[7], [7]]  # step 1's rollout: engine awake from its start
    engine.sync(model)  # after the update
    rollout()  # the greedy evaluation after the step
    rollout()  # step 2's rollout: level 2 dropped the weights, so they are synced in again first
    replace = [("reload_weights", ("weights_iterator",)), ("repack_output_layer", ()), "reset_prefix_cache"]
    sync = ["empty_cache", ("wake_up", ("weights",)), *replace]
    generate = [("wake_up", ("kv_cache",)), "generate", ("sleep", 2)]
    assert stand_in == [("start", True), "generate", ("sleep", 2), *sync, *generate, *sync, *generate]


def test_without_sleep_mode_the_engine_only_generates_and_syncs(stand_in):
    model = torch.nn.Linear(2, 2)
    engine = infra.VLLMEngine("model", rlvr_min.Config(), torch.float32, model)
    engine.generate([[1]], 1, 0.0, 1.0, 4, seed=0)
    engine.sync(model)
    engine.load("checkpoint-000002")
    replace = [("reload_weights", ("weights_iterator",)), ("repack_output_layer", ()), "reset_prefix_cache"]
    assert stand_in == [("start", False), "generate", *replace, *replace]


def test_a_vllm_that_cannot_reload_weights_in_place_is_one_line_naming_the_version(monkeypatch):
    runner = types.ModuleType("vllm.v1.worker.gpu_model_runner")

    class OldRunner:  # vLLM before in-place reloads: reload_weights(self) reads the checkpoint from disk
        def reload_weights(self):
            pass

    runner.GPUModelRunner = OldRunner
    fake = types.ModuleType("vllm")
    fake.__version__ = "0.10.1"
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.v1.worker.gpu_model_runner", runner)
    with pytest.raises(click.UsageError) as error:
        infra.check_vllm()
    message = error.value.message
    assert "vLLM 0.10.1 cannot replace weights in place" in message and f"vllm=={infra.VLLM_VERSION}.*" in message
    assert "\n" not in message
