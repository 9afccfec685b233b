"""Upper bounds on sizes and counts that users set, each tied to the memory (or time) it costs.

A value over a bound is refused up front, by the validator that reads it (a :class:`bglab.errors.ConfigError`
naming the key and the bound), never half way through a run. The bounds are generous for real work; the
figures below are per image, per worker process (see ``docs/robustness.md``).
"""

from __future__ import annotations

MAX_SEED = 2**63 - 1
"""Seeds are stored as signed 64-bit integers (manifests, torch / numpy generators, parquet)."""

MAX_OUTPUT_SIDE = 8192
"""``resize.size`` / ``pose.size`` / ``--size`` (pixels per side): 8192 x 8192 RGB is 192 MiB per image, and the
float intermediates of resizing a few times that."""

MAX_UNET_SIZE = 2048
"""U-Net ``-O size`` (network input, long side): the activations take about 0.4 KiB per input pixel, so
2048 x 2048 needs about 1.6 GiB per worker (the default 256 needs a few tens of MiB)."""

MAX_EPOCHS = 100_000
"""``train.epochs``; longer runs are a typo (``1e22``), not an experiment."""

MAX_BATCH_SIZE = 65_536
"""``train.batch_size``."""

MAX_WIDTH = 4096
"""Channels of one CNN block (``model.widths``, ``model.width``) or hidden units (``model.hidden``): a 3x3 conv
4096 -> 4096 alone holds 151 M weights (576 MiB, and as much again for its gradient and optimiser state)."""

MAX_LR = 100.0
"""``train.lr``: finite and at most this (a learning rate of ``.inf`` trains to NaN)."""

MAX_WORKERS = 128
"""Worker processes (``--workers``) or threads of one command: each process holds a model session and one
image chunk (~0.2-2.5 GB, see :data:`bglab.io.files.DEFAULT_MAX_PIXELS`), so more than this is a typo."""

MAX_CHUNK = 1024
"""Images per task (``--chunk``): a chunk is decoded at once in one worker's memory."""

MAX_THREADS = 1024
"""CPU threads per backend session / torch (``--threads``, ``threads:``)."""

MAX_BOOTSTRAP = 1_000_000
"""``evaluate.bootstrap`` resamples (time grows linearly; 2000 is the default)."""
