"""The fast path equals the readable reference path (the original's formulation) on the authors'
checkpoints: logits in eval mode, logits and every gradient in train mode."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from agcnn_zoo.hub.convert import convert_state_dict, load_original_checkpoint
from agcnn_zoo.nn import reference_path
from agcnn_zoo.registry import get_entry
from conftest import checkpoint_path, golden_path

NAMES = ["z2cnn_rotmnist", "p4cnn_rotmnist", "a_p4cnn_rotmnist", "af_p4cnn_rotmnist"]


def _model(name):
    model = get_entry(name).fn()
    model.load_state_dict(convert_state_dict(load_original_checkpoint(checkpoint_path(name)), model))
    return model


@pytest.mark.parametrize("name", NAMES)
def test_eval_logits_agree_with_reference_and_golden(name):
    model = _model(name).eval()
    golden = load_file(golden_path(name))
    x = golden["input"][:8]
    with torch.no_grad():
        fast = model(x)
        with reference_path():
            ref = model(x)
    assert (fast - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    assert (ref - golden["logits"][:8]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["p4cnn_rotmnist", "a_p4cnn_rotmnist", "af_p4cnn_rotmnist"])
def test_train_mode_gradients_agree_with_reference(name):
    x = load_file(golden_path(name))["input"][:2].clone().requires_grad_(True)
    results = []
    for use_reference in (False, True):
        model = _model(name).train()
        model.dropout.p = 0.0  # dropout masks would differ between the two runs
        with reference_path(use_reference):
            out = model(x)
            out.square().sum().backward()
        results.append((out.detach(), x.grad.clone(),
                        {k: p.grad.clone() for k, p in model.named_parameters()}))
        x.grad = None
    (fo, fx, fg), (ro, rx, rg) = results
    tol = lambda ref: 1e-5 * max(1.0, ref.abs().max().item())  # noqa: E731
    assert (fo - ro).abs().max().item() <= tol(ro)
    assert (fx - rx).abs().max().item() <= tol(rx)
    for k in rg:
        assert (fg[k] - rg[k]).abs().max().item() <= tol(rg[k]), k
