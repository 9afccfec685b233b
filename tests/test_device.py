"""``--device`` for ONNX Runtime inference: provider choice (auto / cpu / cuda), the clear error for ``cuda``
without onnxruntime-gpu (before anything is written), and unchanged outputs on a CPU-only machine; the
machine facts recorded with every experiment session (``bglab.train.machine``).

No GPU is needed: ``onnxruntime.get_available_providers`` is monkeypatched to play a machine with
onnxruntime-gpu installed.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bglab.cli.app import app
from bglab.errors import BackendError, ConfigError
from bglab.foreground import Runtime
from bglab.foreground import onnxrt
from tests.conftest import screen_photos

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.fixture()
def with_cuda(monkeypatch):
    """onnxruntime-gpu as far as provider selection can tell."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])


@pytest.fixture()
def without_cuda(monkeypatch):
    """The CPU build of onnxruntime (what this machine has; patched so the tests also hold on a GPU box)."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["AzureExecutionProvider", CPU])


def test_auto_picks_cuda_first_where_available(with_cuda) -> None:
    assert onnxrt.session_providers(Runtime(device="auto")) == [CUDA, CPU]
    assert onnxrt.session_providers(Runtime(device="cuda")) == [CUDA, CPU]
    assert onnxrt.session_providers(Runtime(device="cpu")) == [CPU]  # cpu stays on the CPU on a GPU box
    assert onnxrt.session_providers(Runtime()) == [CPU]  # the default is cpu, as the training commands'


def test_auto_falls_back_to_the_cpu_silently(without_cuda) -> None:
    assert onnxrt.session_providers(Runtime(device="auto")) == [CPU]
    assert onnxrt.check_device("AUTO") == "auto"


def test_explicit_cuda_without_the_provider_names_the_fix(without_cuda) -> None:
    with pytest.raises(ConfigError, match="no CUDAExecutionProvider") as err:
        onnxrt.check_device("cuda")
    assert "pip install onnxruntime-gpu" in str(err.value.hint) and "--device cpu" in str(err.value.hint)
    with pytest.raises(ConfigError, match="no CUDAExecutionProvider"):
        onnxrt.session_providers(Runtime(device="cuda"))
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        onnxrt.check_device("gpu")


class _FakeSession:
    """Records the providers a session was asked for; ``started`` are those it reports as running."""

    started: list[str] = [CPU]

    def __init__(self, path, sess_options=None, providers=None) -> None:  # noqa: ANN001
        self.asked = list(providers or [])

    def get_providers(self) -> list[str]:
        return [p for p in self.asked if p in self.started]


def test_open_session_passes_the_providers(with_cuda, monkeypatch, tmp_path) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "InferenceSession", _FakeSession)
    monkeypatch.setattr(_FakeSession, "started", [CUDA, CPU])
    sess = onnxrt.open_session(tmp_path / "m.onnx", Runtime(threads=1, device="auto"), hint="")
    assert sess.asked == [CUDA, CPU]
    assert onnxrt.open_session(tmp_path / "m.onnx", Runtime(threads=1), hint="").asked == [CPU]


def test_cuda_that_does_not_start_is_an_error_but_auto_falls_back(with_cuda, monkeypatch, tmp_path) -> None:
    """onnxruntime-gpu installed but no GPU / driver: ONNX Runtime falls back to the CPU by itself; asked for
    ``cuda`` explicitly that is an error, with ``auto`` it is the CPU."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "InferenceSession", _FakeSession)
    monkeypatch.setattr(_FakeSession, "started", [CPU])
    assert onnxrt.open_session(tmp_path / "m.onnx", Runtime(device="auto"), hint="").get_providers() == [CPU]
    with pytest.raises(BackendError, match="could not start CUDA"):
        onnxrt.open_session(tmp_path / "m.onnx", Runtime(device="cuda"), hint="")


def test_runtime_for_threads_carries_the_device() -> None:
    assert Runtime.for_threads(0, "auto").device == "auto"
    assert Runtime.for_threads(1, "cuda").device == "cuda" and Runtime.for_threads(1).device == "cpu"


@pytest.mark.parametrize("command", ["remove", "preprocess", "variants", "eval-seg"])
def test_cli_cuda_without_onnxruntime_gpu_writes_nothing(command, without_cuda, tmp_path) -> None:
    src = screen_photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = {
        "remove": ["remove", str(src), "-o", str(out)],
        "preprocess": ["preprocess", str(src), str(out), "--background", "remove"],
        "variants": ["variants", str(src), str(out), "--backend", "unet"],
        "eval-seg": ["eval-seg", "--images", str(src), "--masks", str(src), "--sheet", str(out / "sheet.png")],
    }[command]
    res = CliRunner().invoke(app, [*args, "--device", "cuda"])
    assert res.exit_code != 0
    assert isinstance(res.exception, ConfigError), res.output
    assert "CUDAExecutionProvider" in str(res.exception) and "onnxruntime-gpu" in str(res.exception)
    assert not out.exists(), "nothing may be written before the device check"


def test_serve_settings_check_and_carry_the_device(without_cuda) -> None:
    from bglab.serve.settings import ServerSettings

    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        ServerSettings(device="cuda")
    s = ServerSettings(device="Auto")
    assert s.device == "auto" and ServerSettings.from_env(s.to_env()).device == "auto"


def test_remove_outputs_unchanged_on_the_cpu(tmp_path) -> None:
    """On a machine without CUDA, --device auto gives the very bytes --device cpu (the default) gives."""
    src = screen_photos(tmp_path / "in", 2)
    outs = {}
    for device in (None, "cpu", "auto"):
        out = tmp_path / f"out-{device}"
        extra = ["--device", device] if device else []
        res = CliRunner().invoke(app, ["remove", str(src), "-o", str(out), "--threads", "1", "--backend", "unet",
                                       *extra])  # v3 finds the synthetic screen "hands"
        assert res.exit_code == 0, res.output
        outs[device] = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
    assert len(outs[None]) == 2
    assert outs[None] == outs["cpu"] == outs["auto"]


# ------------------------------------------------------------------ torch training (experiment, train-seg)
@pytest.mark.parametrize(("name", "gpu", "want"), [("cpu", True, "cpu"), ("auto", False, "cpu"),
                                                   ("AUTO", True, "cuda"), ("cuda", True, "cuda"),
                                                   ("cuda:1", True, "cuda:1")])
def test_training_device_rule(monkeypatch, name: str, gpu: bool, want: str) -> None:
    import torch

    from bglab.train.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert resolve_device(name) == want


def test_training_device_refuses_cuda_without_a_gpu_and_unknown_names(monkeypatch) -> None:
    import torch

    from bglab.train.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="torch sees no GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_train_seg_with_cuda_but_no_gpu_writes_nothing(monkeypatch, tmp_path) -> None:
    """``bglab train-seg --device cuda`` on a machine without a GPU: a clear error before the run folder exists
    (the data is never read: the paths here do not exist)."""
    import torch

    pytest.importorskip("albumentations")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train-seg", "--keyed", str(tmp_path / "k"), "--images", str(tmp_path / "i"),
                                   "--out", str(out), "--device", "cuda"])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    assert "torch sees no GPU" in str(res.exception)
    assert not out.exists()


def test_machine_info_names_what_bit_for_bit_training_depends_on(monkeypatch) -> None:
    """The CPU model, torch's kernel instruction set and torch's version: two machines that differ in one of
    them do not repeat each other's CPU training bit for bit."""
    pytest.importorskip("torch")
    import torch

    from bglab.train import machine

    info = machine.machine_info()
    assert info["cpus"] >= 1 and info["python"] and info["torch"] == torch.__version__
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    key = machine.reproducibility_key(info)
    assert key == (info["cpu"], info["cpu_capability"], info["torch"], None)  # no device: not training here
    assert machine.reproducibility_key({**info, "device": "cuda"}) != key
    assert machine.reproducibility_key({**info, "cpu_capability": "other"}) != key
    real_path = machine.Path
    monkeypatch.setattr(machine, "Path", lambda *_: real_path("/nonexistent/cpuinfo"))
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    assert machine.cpu_model() is None  # no /proc/cpuinfo and no processor name: unknown, not an error
