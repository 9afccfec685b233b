"""The report's figures (matplotlib, Agg), each returned as a base64 PNG to inline in the HTML report."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["confusion_fig", "curves_fig", "diff_fig", "matrix_fig", "per_class_fig", "photos_fig", "robust_fig",
           "sheet_b64"]


def _fig_to_b64(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def curves_fig(res: Mapping[str, Any], title: str) -> str:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator
    panels = [("train", "train"), ("val", "val"), *(("test", t) for t in res["tests"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.8), squeeze=False, sharey=True)
    for ax, (split, test) in zip(axes[0], panels, strict=True):
        for i, lab in enumerate(res["lines"]):
            c = res["curves"].get(f"{lab}|{split}|{test}")
            if not c:
                continue
            ep = [int(e) for e in c]
            m = [v[0] for v in c.values()]
            ax.plot(ep, m, marker="o", ms=3, label=lab, color=f"C{i}")
            ax.fill_between(ep, [v[1] for v in c.values()], [v[2] for v in c.values()], color=f"C{i}", alpha=0.15)
        ax.set_title(f"{split}" if split != "test" else f"test: {test}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    _legend(fig, axes[0][0])
    fig.suptitle(title, fontsize=10, y=1.03)
    return _fig_to_b64(fig)


def _legend(fig: Any, ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08),
                   ncol=min(len(labels), 6), frameon=False)


def _bars(ax: Any, groups: Sequence[str], series: Mapping[str, Sequence[tuple[float, float, float]]]) -> None:
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (lab, vals) in enumerate(series.items()):
        m = np.array([v[0] for v in vals], float)
        lo = np.array([v[1] for v in vals], float)
        hi = np.array([v[2] for v in vals], float)
        err = np.vstack([np.where(np.isnan(lo), 0, m - lo), np.where(np.isnan(hi), 0, hi - m)])
        ax.bar(x + (i - (n - 1) / 2) * width, np.nan_to_num(m), width, yerr=err, capsize=2, label=lab, color=f"C{i}")
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)


def _bars_per_test(res: Mapping[str, Any], groups: Sequence[str],
                   series: Callable[[str, str], list[tuple[float, float, float]] | None], ylabel: str,
                   title: str) -> str:
    """One bar panel per test set: for every line (arm / variant) ``series(line, test)`` gives its bars."""
    plt = _plt()
    tests = res["tests"]
    fig, axes = plt.subplots(1, len(tests), figsize=(4.2 * len(tests), 2.8), squeeze=False)
    for ax, t in zip(axes[0], tests, strict=True):
        bars = {lab: v for lab in res["lines"] if (v := series(lab, t)) is not None}
        _bars(ax, list(groups), bars)
        ax.set_title(f"test: {t}", fontsize=9)
    axes[0][0].set_ylabel(ylabel)
    _legend(fig, axes[0][0])
    fig.suptitle(title, fontsize=10, y=1.03)
    return _fig_to_b64(fig)


def per_class_fig(res: Mapping[str, Any], classes: Sequence[str], title: str) -> str:
    def series(lab: str, t: str) -> list[tuple[float, float, float]] | None:
        pc = res["per_class"].get(f"{lab}|{t}")
        return None if pc is None else [(math.nan if v is None else v, math.nan, math.nan) for v in pc]

    return _bars_per_test(res, classes, series, "accuracy (all seeds)", title)


def confusion_fig(res: Mapping[str, Any], test: str, classes: Sequence[str], title: str) -> str:
    plt = _plt()
    labs = [lab for lab in res["lines"] if f"{lab}|{test}" in res["confusion"]]
    fig, axes = plt.subplots(2, max(1, len(labs)), figsize=(2.6 * max(1, len(labs)), 5.0), squeeze=False)
    for j, lab in enumerate(labs):
        cm = np.array(res["confusion"][f"{lab}|{test}"], float)
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = 100 * cm / cm.sum(axis=1, keepdims=True)
        for i, (mat, fmt) in enumerate(((cm, "{:.0f}"), (np.nan_to_num(pct), "{:.0f}%"))):
            ax = axes[i][j]
            ax.imshow(np.nan_to_num(pct), cmap="Blues", vmin=0, vmax=100)  # colour by row % in both
            for (r, c), v in np.ndenumerate(mat):
                dark = np.nan_to_num(pct)[r, c] > 60
                ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7, color="white" if dark else "black")
            names = list(classes) or [str(k) for k in range(cm.shape[0])]
            ax.set_xticks(range(cm.shape[0]), names[: cm.shape[0]], fontsize=7, rotation=30)
            ax.set_yticks(range(cm.shape[0]), names[: cm.shape[0]], fontsize=7)
            ax.set_title(f"{lab}: {'row %' if i else 'counts'}", fontsize=8)
            if j == 0:
                ax.set_ylabel("true")
            if i == 1:
                ax.set_xlabel("predicted")
    fig.suptitle(title, fontsize=10, y=1.03)
    fig.tight_layout()
    return _fig_to_b64(fig)


def robust_fig(res: Mapping[str, Any], title: str) -> str:
    def series(lab: str, t: str) -> list[tuple[float, float, float]]:
        f = res["final"][lab]
        return [(f[f"{t}|{d}"]["mean"], f[f"{t}|{d}"]["lo"], f[f"{t}|{d}"]["hi"]) for d in res["distortions"]]

    return _bars_per_test(res, res["distortions"], series, "final accuracy (mean, 95% CI)", title)


def diff_fig(comps: Sequence[Mapping[str, Any]], title: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(comps) + 1.2))
    ys = np.arange(len(comps))[::-1]
    for y, c in zip(ys, comps, strict=True):
        lo, hi = c["boot_ci"]
        color = "C3" if c["p_holm"] < 0.05 else "C0"
        ax.plot([100 * lo, 100 * hi], [y, y], color=color)
        ax.plot([100 * c["diff"]], [y], "o", color=color)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(ys, [f"{c['b']} - {c['a']} | {c['test_set']} | {c['distortion']}" for c in comps], fontsize=7)
    ax.set_xlabel("accuracy difference (points), 95% bootstrap CI; red: Holm p < 0.05")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _fig_to_b64(fig)


def matrix_fig(mx: Mapping[str, Any], proto: str, test: str, title: str) -> str:
    plt = _plt()
    rows, cols = mx["rows"], mx["test_arms"]
    cells = mx["protocols"][proto]["cells"]
    m = np.array([[cells[f"{r}|{test}|{c}"]["mean"] for c in cols] for r in rows], float) * 100
    fig, ax = plt.subplots(figsize=(0.9 * len(cols) + 2.5, 0.42 * len(rows) + 1.6))
    ax.imshow(np.nan_to_num(m, nan=0.0), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, "n/a" if math.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=7,
                color="black" if v > 60 else "white")
    ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("test arm (the same test images seen through it)")
    ax.set_ylabel("trained on")
    ax.set_title(title, fontsize=9)
    return _fig_to_b64(fig)


def sheet_b64(path: Path, classes: Sequence[str], n: int) -> str | None:
    """Image | Grad-CAM overlay pairs of one run's saliency sample, as a base64 PNG (None if unreadable)."""
    try:
        import cv2

        from bglab.train.saliency import overlay_sheet

        with np.load(path, allow_pickle=False) as z:
            imgs, heat = z["sheet_images"], z["sheet_heat"].astype(np.float32)
            idx, y, p, share = z["sheet_index"], z["y_true"], z["y_pred"], z["share"]
        titles = []
        for i in idx:
            name = classes[int(y[i])] if int(y[i]) < len(classes) else str(int(y[i]))
            sh = "n/a" if math.isnan(share[i]) else f"{100 * share[i]:.0f}%"
            titles.append(f"{name[:10]}{'' if y[i] == p[i] else ' (wrong)'} {sh}")
        sheet = overlay_sheet(list(imgs), list(heat), titles, ncols=max(1, n), cell=64)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        return base64.b64encode(buf.tobytes()).decode("ascii") if ok else None
    except (ImportError, OSError, KeyError, ValueError):
        return None


def photos_fig(photos: Sequence[tuple[Path | None, str]], *, ncols: int = 8, cell: float = 1.4) -> str | None:
    """A grid of photos with a caption each, as a base64 PNG; a photo that cannot be found or read is a grey
    cell captioned "not found". None when there is nothing to show."""
    if not photos:
        return None
    from bglab.errors import ImageReadError
    from bglab.io.files import read_image

    plt = _plt()
    ncols = max(1, min(int(ncols), len(photos)))
    nrows = math.ceil(len(photos) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, (cell + 0.25) * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (path, caption) in zip(axes.ravel(), photos, strict=False):
        try:
            if path is None:
                raise FileNotFoundError
            img = read_image(path)
        except (ImageReadError, OSError):
            img, caption = np.full((8, 8, 3), 200, np.uint8), f"{caption} (not found)"
        ax.imshow(img)
        ax.set_title(caption, fontsize=6)
    fig.tight_layout()
    return _fig_to_b64(fig)
