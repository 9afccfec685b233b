"""Frozen-backbone features for ``tune: head`` runs: computed once per image content, cached on disk.

With a frozen pretrained backbone every run of an arm sees the same features, so they are computed once and
the runs (every seed, every head) train a linear layer on them in seconds. The cache key is the content of
each uint8 image plus the backbone's identity (name + weights checksum), so the same image through the same
weights is never embedded twice, whichever batch, protocol or arm it comes in, in this invocation or a
resumed one (ONNX Runtime's CPU features do not depend on the batch they are computed in: tested); files are
one ``.npy`` per image (no pickle), written atomically under ``cache/features/<2 hex>/``.
:func:`onnx_embedder` runs the frozen backbone in ONNX Runtime (exported in memory), about 4x faster than
PyTorch's depthwise convolutions on a CPU.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FeatureCache", "StackedFeatures", "onnx_embedder"]


class FeatureCache:
    """``cache(x)``: features (float32 tensor (N, F)) of a uint8 batch (N, C, H, W) through ``embed``."""

    def __init__(self, identity: str, embed: Callable[[Any], Any], folder: Path | None, *, batch: int = 64,
                 log: Callable[[str], None] | None = None, maps: Callable[[Any], Any] | None = None) -> None:
        self.identity = identity
        self._maps_fn = maps  # uint8 batch -> the last block's maps (N, K, h, w), for saliency
        self._maps: dict[str, Any] = {}
        #: uint8 (or float [0, 1]) batch (N, C, H, W) -> float features (N, F), no grad, uncached
        self.embed = embed
        self.folder = folder
        self.batch = int(batch)
        self.log = log or (lambda s: None)
        self._mem: dict[str, Any] = {}

    def _key(self, arr: np.ndarray) -> str:
        h = hashlib.sha256(f"{self.identity}|{arr.dtype}|{arr.shape}".encode())
        h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
        return h.hexdigest()[:24]

    def maps(self, x: Any) -> Any:
        """The last block's maps of a uint8 batch (kept in memory for this invocation; saliency only)."""
        import torch

        key = self._key(x.numpy())
        if key not in self._maps:
            if self._maps_fn is None:
                raise ValueError("this feature cache has no maps function")
            with torch.no_grad():
                self._maps[key] = torch.cat([self._maps_fn(x[i:i + self.batch]).float().cpu()
                                             for i in range(0, x.shape[0], self.batch)])
        return self._maps[key]

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / key[:2] / f"{key}.npy"

    def _load(self, key: str, n_feat: int | None) -> np.ndarray | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            row = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a broken cache file is recomputed
        if row.ndim != 1 or (n_feat is not None and row.shape[0] != n_feat):
            return None
        return row

    def _save(self, key: str, row: np.ndarray) -> None:
        path = self._path(key)
        if path is not None:
            from bglab.io.files import atomic_write_npy

            atomic_write_npy(path, np.ascontiguousarray(row, dtype=np.float32))

    def __call__(self, x: Any) -> Any:
        import torch

        arr = np.ascontiguousarray(x.numpy())
        keys = [self._key(arr[i]) for i in range(arr.shape[0])]
        rows: list[np.ndarray | None] = [self._mem.get(k) for k in keys]
        n_feat = next((r.shape[0] for r in rows if r is not None), None)
        for i, k in enumerate(keys):
            if rows[i] is None:
                rows[i] = self._load(k, n_feat)
                if rows[i] is not None:
                    n_feat = rows[i].shape[0]
        todo = sorted({keys[i]: i for i, r in enumerate(rows) if r is None}.values())
        if todo:
            with torch.no_grad():
                for j in range(0, len(todo), self.batch):
                    idx = todo[j:j + self.batch]
                    feats = self.embed(x[idx]).float().cpu().numpy()
                    for i, f in zip(idx, feats, strict=True):
                        self._save(keys[i], f)
                        self._mem[keys[i]] = f
            for i, k in enumerate(keys):
                if rows[i] is None:
                    rows[i] = self._mem[k]
            self.log(f"  features: {len(todo)} image(s) embedded ({self.identity.split('|')[0]}), "
                     f"{len(keys) - len(todo)} from the cache")
        for k, r in zip(keys, rows, strict=True):
            self._mem[k] = r
        if not rows:
            return torch.zeros((0, 0), dtype=torch.float32)
        return torch.from_numpy(np.stack(rows).astype(np.float32, copy=False))


class StackedFeatures:
    """Several feature caches side by side: ``cache(x)`` is their features concatenated per image (``hand-pose``:
    the landmark features, then the fallback backbone's)."""

    def __init__(self, parts: list[FeatureCache]) -> None:
        self.parts = parts
        self.identity = " + ".join(p.identity for p in parts)

    def embed(self, x: Any) -> Any:
        import torch

        return torch.cat([p.embed(x).float().cpu() for p in self.parts], dim=1)

    def __call__(self, x: Any) -> Any:
        import torch

        return torch.cat([p(x) for p in self.parts], dim=1)


def onnx_embedder(model: Any, shape: tuple[int, int, int], threads: int = 0) -> Callable[[Any], Any]:
    """``embed(x)``: ``model.features`` of a normalised float batch (N, C, H, W) in ONNX Runtime, the graph
    exported in memory for inputs of ``shape`` (C, H, W) and any batch size."""
    import warnings

    import onnxruntime as ort
    import torch

    class _Features(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m.features(x)

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the traced padding is fixed for this (C, H, W), which is what is run
        warnings.simplefilter("ignore")
        torch.onnx.export(_Features(model.eval()), torch.zeros(1, *shape), buf, input_names=["x"],
                          output_names=["f"], dynamic_axes={"x": {0: "n"}, "f": {0: "n"}}, opset_version=17,
                          dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])

    def embed(x: Any) -> Any:
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return torch.from_numpy(sess.run(None, {"x": arr})[0])

    return embed
