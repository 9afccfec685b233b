"""A PyTorch ``Dataset`` that applies a :class:`~bglab.pipeline.Pipeline` on the fly (no preprocessed copy).

>>> ds = PipelineDataset("data/rps/webcam", "bglab/configs/preprocess-reference.yaml")   # doctest: +SKIP
>>> loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=4)          # doctest: +SKIP

Backend sessions are opened lazily in the process that uses them: each DataLoader worker opens its own
(with ``Runtime(threads=1)``), and a dataset pickled to a worker never carries a session. Outputs equal those
of ``bglab preprocess`` with the same config (same per-sample seeds: the key is ``origin/class/filename``).
A pipeline whose locate step has ``on_missing: skip`` is refused: a map-style dataset cannot drop items on
the fly; use ``keep`` / ``mask-box``, or preprocess to disk and read the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bglab.data.dataset import Sample, sample_key
from bglab.errors import ConfigError
from bglab.pipeline import Pipeline, StepResult

__all__ = ["PipelineDataset", "to_tensor"]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) / (H, W, C) -> float32 (C, H, W) in [0, 1]."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div_(255.0)


class PipelineDataset(Dataset):
    """``(tensor, class index)`` per sample, the image read and run through ``pipeline`` when asked for.

    ``samples``: a list of :class:`~bglab.data.dataset.Sample`, or sources as ``bglab preprocess`` takes them
    (ImageFolder folders, CSV manifests, ``ORIGIN=PATH``). ``classes`` fixes the label order (default: sorted
    labels). ``transform`` is applied to the tensor (or to the uint8 image with ``tensor=False``).
    """

    def __init__(
        self,
        samples: Sequence[Sample] | str | Path | Sequence[str | Path],
        pipeline: Pipeline | Mapping[str, Any] | str | Path,
        *,
        classes: Sequence[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        tensor: bool = True,
        max_pixels: int | None = None,
    ) -> None:
        from bglab.pipeline.preprocess import collect_samples

        if isinstance(samples, str | Path):
            samples = [samples]
        items = list(samples)
        if items and not all(isinstance(s, Sample) for s in items):
            items, problems = collect_samples(items)  # type: ignore[arg-type]
            if problems:
                raise ConfigError(f"{len(problems)} bad manifest row(s): {problems[0]}")
        self.samples: list[Sample] = items  # type: ignore[assignment]
        self.pipeline = pipeline if isinstance(pipeline, Pipeline) else Pipeline.from_config(pipeline)
        loc = self.pipeline.locate_step
        if loc is not None and loc.on_missing == "skip":
            raise ConfigError("locate.on_missing: 'skip' cannot be used on the fly",
                              hint="use keep or mask-box, or run bglab preprocess and train from its outputs")
        self.classes = list(classes) if classes is not None else sorted({s.label for s in self.samples})
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({s.label for s in self.samples} - set(self.class_to_idx))
        if unknown:
            raise ConfigError(f"labels not in classes: {', '.join(unknown)}")
        self.transform = transform
        self.tensor = tensor
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def _open(self) -> None:
        if self.pipeline._opened_pid == os.getpid():
            return
        from bglab.foreground import Runtime

        in_worker = torch.utils.data.get_worker_info() is not None
        self.pipeline.open(Runtime(threads=1) if in_worker else None)

    def result(self, index: int) -> StepResult:
        """The full pipeline result of one sample (image, box, found flag, coverage, timings)."""
        from bglab.io.files import read_image

        self._open()
        s = self.samples[index]
        image = read_image(s.path, max_pixels=self.max_pixels)
        return self.pipeline(image, source=s.path, key=sample_key(s))

    def __getitem__(self, index: int) -> tuple[Any, int]:
        res = self.result(index)
        x: Any = to_tensor(res.image) if self.tensor else res.image  # type: ignore[arg-type]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.class_to_idx[self.samples[index].label]
