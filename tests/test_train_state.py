"""Pickle-free optimizer state (bglab.train.state), shared by train-seg and experiment checkpoints."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from bglab.train.state import load_optimizer, optimizer_tensors  # noqa: E402


def _stepped() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_round_trip_through_json_restores_adam_exactly() -> None:
    model, opt = _stepped()
    tensors, scalars = optimizer_tensors(opt, prefix="optim.")
    assert tensors and all(k.startswith("optim.") for k in tensors)
    scalars = json.loads(json.dumps(scalars))  # what a checkpoint stores
    fresh = torch.optim.Adam(model.parameters(), lr=0.5)
    load_optimizer(fresh, {k[6:]: v for k, v in tensors.items()}, scalars)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]  # lr 1e-3 again, betas a tuple again
    for pid, st in a["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][pid][k])), k


def test_experiment_checkpoints_written_before_the_shared_module_still_load() -> None:
    """The experiment runner used to keep per-parameter scalars under "scalars"; such checkpoints resume."""
    model, opt = _stepped()
    tensors, scalars = optimizer_tensors(opt)
    legacy = {"param_groups": scalars["param_groups"], "scalars": scalars["state"]}
    fresh = torch.optim.Adam(model.parameters())
    load_optimizer(fresh, tensors, json.loads(json.dumps(legacy)))
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
