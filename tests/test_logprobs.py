"""Log-probs through the chunked output layer (infra.LogprobHead) equal those of the full logits, with gradients."""

import conftest
import pytest
import torch

import infra
import rlvr_min


def tiny_qwen2(tie: bool):
    return conftest.tiny_qwen2(997, tie_word_embeddings=tie).float()


def reference(model, ids, attention):
    """The unchunked computation: the whole [batch, length, vocabulary] logits, log_softmax, gather."""
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    log_softmax = logits.log_softmax(-1)
    logprobs = log_softmax.gather(2, ids[:, 1:, None]).squeeze(2)
    return logprobs, -(log_softmax.exp() * log_softmax).sum(-1)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("chunk", [7, 512])  # many chunks, a ragged last one; and one chunk
def test_chunked_logprobs_entropy_and_gradients_equal_the_full_logits(tie, chunk, monkeypatch):
    monkeypatch.setattr(infra, "LOGPROB_CHUNK", chunk)
    model = tiny_qwen2(tie)
    ids = torch.randint(0, 997, (3, 21))
    attention = torch.ones_like(ids)
    attention[2, 15:] = 0  # right padding
    weights = torch.randn(3, 20)  # a loss that weighs each position differently

    expected, expected_entropy = reference(model, ids, attention)
    (expected * weights).sum().backward()
    expected_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    logprobs, entropy = rlvr_min.token_logprobs(model, ids, attention, with_entropy=True)
    (logprobs * weights).sum().backward()
    assert logprobs.shape == entropy.shape == (3, 20)
    assert torch.allclose(logprobs, expected, atol=1e-5)
    assert torch.allclose(entropy, expected_entropy, atol=1e-5)
    for name, parameter in model.named_parameters():
        assert torch.allclose(parameter.grad, expected_grads[name], atol=1e-5), name
    assert type(model.get_output_embeddings()).forward is torch.nn.Linear.forward  # the layer is itself again
    assert "forward" not in vars(model.get_output_embeddings())


def test_without_gradients_only_the_log_probs():
    model = tiny_qwen2(True)
    ids = torch.randint(0, 997, (2, 9))
    with torch.no_grad():
        logprobs = rlvr_min.token_logprobs(model, ids, torch.ones_like(ids))
    assert torch.allclose(logprobs, reference(model, ids, torch.ones_like(ids))[0], atol=1e-5)
