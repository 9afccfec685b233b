"""An exported segmenter read back into its PyTorch network, so a shipped ONNX model can be trained on.

``bglab export-seg`` writes the network in inference form: each batch-norm is folded into the convolution before
it (weight scaled, a bias added), so the ONNX file holds one weight and one bias per convolution and no
batch-norm statistics. That is enough to rebuild the same function in PyTorch: every convolution gets its
folded weight, and the batch-norm after it becomes ``y + bias`` (mean 0, variance 1 - eps, scale 1). The
network then computes what the ONNX file computes (checked against ONNX Runtime in the tests), which is what
``bglab train-seg --init MODEL.onnx`` needs to fine-tune e.g. the shipped ``hand_unet_effnet.onnx`` on new
photos without its training checkpoint.

Training mode normalises by the batch's statistics, not the stored ones, so before training
:func:`recalibrate_batchnorm` measures each trainable batch-norm's input on real images and rewrites the layer
in the equivalent form with those statistics (the eval-mode function is unchanged; the first training steps then
see about the inputs the layer was calibrated on).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bglab.errors import BglabError, ConfigError, ModelIntegrityError

_HINT = ("pass an ONNX file written by `bglab export-seg` (with its .json beside it), or a shipped model's name "
         "(unet-effnet, unet)")


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _conv_order(model: nn.Module, size: int) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """The model's convolutions in the order a forward pass runs them (the order the ONNX exporter writes
    them), each with the batch-norm that takes its output directly (folded into it on export), if any."""
    order: list[nn.Conv2d] = []
    outputs: dict[int, nn.Conv2d] = {}
    alive: list[torch.Tensor] = []  # every conv output kept until the pass ends, so no id is reused
    follows: dict[nn.Conv2d, nn.BatchNorm2d] = {}

    def on_conv(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        order.append(mod)  # type: ignore[arg-type]
        outputs[id(out)] = mod  # type: ignore[assignment]
        alive.append(out)

    def on_bn(mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        conv = outputs.get(id(inp[0]))
        if conv is not None:
            follows[conv] = mod  # type: ignore[assignment]

    hooks = [m.register_forward_hook(on_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(on_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with _eval(model), torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    return [(c, follows.get(c)) for c in order]


def _onnx_convs(path: Path) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(node name, weight, bias or None) of every Conv node of the ONNX graph, in graph order."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # pragma: no cover - onnx comes with the train extra
        raise BglabError("reading an ONNX model's weights needs the onnx package",
                         hint="pip install 'bglab[train]'") from None
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # noqa: BLE001 - protobuf raises many kinds on a damaged file
        raise BglabError(f"--init is not a readable ONNX file ({type(exc).__name__}: {exc})", path=path,
                         hint=_HINT) from None
    inits = {t.name: t for t in graph.initializer}
    convs = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        w = inits.get(node.input[1]) if len(node.input) > 1 else None
        b = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if w is None:
            raise BglabError(f"--init: convolution {node.name or '?'} has no stored weight (not an exported "
                             "bglab model)", path=path, hint=_HINT)
        convs.append((node.name, numpy_helper.to_array(w), None if b is None else numpy_helper.to_array(b)))
    return convs


def shipped_model(name: str | Path) -> Path | None:
    """The ONNX file of a shipped segmenter named like its backend (``unet-effnet``, ``unet``), else None."""
    from bglab.foreground.unet import DEFAULT_MODEL, EFFNET_MODEL

    return {"unet-effnet": EFFNET_MODEL, "unet": DEFAULT_MODEL}.get(str(name))


def is_onnx(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() == ".onnx"


def verified_info(path: Path) -> dict[str, Any]:
    """The model JSON beside an exported ONNX file, after its checksum is checked (before any training)."""
    from bglab.foreground.unet import verified_info as checked_json

    if not path.is_file():
        raise BglabError("--init model not found", path=path, hint=_HINT)
    if not path.with_suffix(".json").is_file():
        raise ModelIntegrityError(f"no {path.with_suffix('.json').name} next to the model, so its checksum cannot "
                                  "be verified", path=path, hint=_HINT)
    return checked_json(path, hint=_HINT)


def load_onnx_weights(model: nn.Module, path: str | Path, *, probe_size: int = 64) -> None:
    """Put an exported model's (batch-norm folded) weights into ``model`` of the same architecture.

    Afterwards ``model.eval()`` computes what the ONNX file does. Convolutions are paired in execution order and
    every shape is checked; any difference is listed and nothing is changed."""
    path = Path(path)
    pairs = _conv_order(model, probe_size)
    convs = _onnx_convs(path)
    problems = []
    if len(pairs) != len(convs):
        problems.append(f"{len(convs)} convolutions in the file, {len(pairs)} in the network")
    for i, ((conv, bn), (name, w, b)) in enumerate(zip(pairs, convs, strict=False)):
        if tuple(w.shape) != tuple(conv.weight.shape):
            problems.append(f"convolution {i} ({name}): weight {tuple(w.shape)} in the file, "
                            f"{tuple(conv.weight.shape)} in the network")
        elif b is not None and bn is None and conv.bias is None and np.any(b != 0):
            problems.append(f"convolution {i} ({name}): a bias in the file, none in the network")
        if len(problems) >= 8:
            break
    if problems:
        raise ConfigError("--init was exported from another architecture: " + "; ".join(problems[:8]),
                          path=path, hint=_HINT)
    with torch.no_grad():
        for (conv, bn), (_, w, b) in zip(pairs, convs, strict=True):
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            bias = torch.from_numpy(np.array(b)) if b is not None else torch.zeros(conv.out_channels)
            if bn is not None:  # y = conv(x) + bias, written as a batch-norm of mean 0, variance 1 - eps
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(bias)
                if conv.bias is not None:
                    conv.bias.zero_()
            elif conv.bias is not None:
                conv.bias.copy_(bias)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: np.ndarray | torch.Tensor, *, batch: int = 16) -> int:
    """Give each batch-norm that trains (``training`` True after ``model.train()``) the mean and variance of its
    input over the images ``x`` (N, 3, H, W; normalised as the network expects), rewriting its scale and shift
    so the eval-mode function stays exactly the same. Returns the number of layers rewritten."""
    was = model.training
    model.train()  # the layers that train are those left in training mode (a model may keep some frozen)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.training]
    model.train(was)
    if not bns or len(x) == 0:
        return 0
    sums: dict[nn.Module, list[torch.Tensor]] = {m: [torch.zeros(m.num_features, dtype=torch.float64)] * 2
                                                 for m in bns}
    count: dict[nn.Module, int] = dict.fromkeys(bns, 0)

    def on_bn(mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        y = inp[0].detach().to(torch.float64).transpose(0, 1).reshape(inp[0].shape[1], -1)
        s, s2 = sums[mod]
        sums[mod] = [s + y.sum(1), s2 + (y * y).sum(1)]
        count[mod] += y.shape[1]

    hooks = [m.register_forward_pre_hook(on_bn) for m in bns]
    try:
        with _eval(model):
            xs = torch.as_tensor(np.asarray(x, np.float32))
            for k in range(0, len(xs), batch):
                model(xs[k:k + batch])
    finally:
        for h in hooks:
            h.remove()
    for m in bns:
        n = max(count[m], 1)
        mean = sums[m][0] / n
        var = (sums[m][1] / n - mean * mean).clamp_min(0.0)
        old_scale = m.weight.double() / torch.sqrt(m.running_var.double() + m.eps)
        new_std = torch.sqrt(var + m.eps)
        m.bias.copy_((m.bias.double() + (mean - m.running_mean.double()) * old_scale).float())
        m.weight.copy_((old_scale * new_std).float())
        m.running_mean.copy_(mean.float())
        m.running_var.copy_(var.float())
    return len(bns)
