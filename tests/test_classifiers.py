"""Classifiers for the experiments: shapes, the dropout / batch-norm switches, options, determinism, learning."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from bglab.errors import ConfigError  # noqa: E402
from bglab.train.classifiers import ResNetSmall, SmallVGG, build_classifier, count_parameters  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():  # tiny networks: one thread is faster than two fighting for shared cores
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("name", "in_ch", "size"), [("cnn", 1, 64), ("cnn", 3, 32), ("vgg", 1, 48),
                                                     ("resnet18", 1, 32), ("resnet18", 3, 16)])
def test_output_shape(name: str, in_ch: int, size: int) -> None:
    opts = {"width": 8} if name == "resnet18" else {"widths": [8, 16, 32], "hidden": 32}
    net = build_classifier(name, 3, in_ch, size, **opts)
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(2, in_ch, size, size))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


def _count(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


def test_reference_cnn_has_dropout_and_no_batchnorm() -> None:
    net = build_classifier("cnn", 3, 1, 64, dropout=0.5, batchnorm=False)
    assert isinstance(net, SmallVGG)
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.5 for d in drops)
    assert _count(net, nn.BatchNorm2d) == 0 and _count(net, nn.BatchNorm1d) == 0


@pytest.mark.parametrize(("dropout", "batchnorm", "n_drop", "n_bn"), [(0.0, False, 0, 0), (0.5, False, 2, 0),
                                                                      (0.0, True, 0, 7), (0.3, True, 2, 7)])
def test_regularisation_switches(dropout: float, batchnorm: bool, n_drop: int, n_bn: int) -> None:
    net = build_classifier("cnn", 3, 1, 32, widths=[8, 16, 16], hidden=16, dropout=dropout, batchnorm=batchnorm)
    assert _count(net, nn.Dropout) == n_drop
    assert _count(net, nn.BatchNorm2d) + _count(net, nn.BatchNorm1d) == n_bn


def test_resnet18_layout() -> None:
    net = build_classifier("resnet18", 3, 1, 32)
    assert isinstance(net, ResNetSmall)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 17  # stem + 8 blocks x 2: ResNet-18
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())  # small inputs: no stem pooling
    assert 10_000_000 < count_parameters(net) < 12_000_000


@pytest.mark.parametrize(("args", "opts", "key"), [
    (("transformer", 3), {}, "model.name"),
    (("cnn", 3), {"depth": 3}, "model.depth"),
    (("cnn", 1), {}, "2 classes"),
    (("cnn", 3), {"dropout": 1.0}, "model.dropout"),
    (("resnet18", 3), {"widths": [8]}, "model.widths"),
])
def test_bad_names_and_options(args: tuple, opts: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_classifier(*args, **opts)


def test_too_small_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="too small"):
        build_classifier("cnn", 3, 1, 4, widths=[8, 8, 8])


def test_seeded_initialisation_is_identical() -> None:
    torch.manual_seed(7)
    a = build_classifier("cnn", 3, 1, 32, widths=[8, 16])
    torch.manual_seed(7)
    b = build_classifier("cnn", 3, 1, 32, widths=[8, 16])
    assert all(p.equal(q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_learns_a_separable_problem(name: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 1, 16, 16) * 0.2
    y = torch.arange(16) % 2
    x[y == 1, :, 4:12, 4:12] += 0.8  # class 1: a bright square
    opts = {"width": 4, "blocks": [1, 1]} if name == "resnet18" else {"widths": [8, 8], "hidden": 16, "dropout": 0.0}
    net = build_classifier(name, 2, 1, 16, **opts)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(25):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x).argmax(1) == y).float().mean().item()
    assert acc == 1.0
