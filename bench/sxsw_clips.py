"""Write a manifest of the rock-paper-scissors `sxsw` photos grouped by **recording** (clip or session), not
by photo: a split by these groups tests on clips, people and rooms the classifier never saw, the condition of
photos "from other clips and cameras" (docs/pretrained.md, "Split by clip").

The default grouping (``bglab.data.dataset.default_group``) keeps Roboflow's augmented copies of one photo
together but lets frames of one video fall on both sides of a split. Rules, from the file names:
``egohands-public-<ms>`` frames: one session per run of timestamps with gaps under 10 minutes (351 frames,
43 sessions); ``IMG_0123_MOV-45`` / ``..._mp4-45`` / ``..._mov-45``: the video before the frame number;
screen shots and photo-booth pictures: their day; ``20220216_222247``: its day; ``youtube-N``, the zoom test
and the numbered ``0101_png`` frames (one room, one person): one group each. Groups may span classes.

    python bench/sxsw_clips.py ../shared/data/rps/sxsw work/sxsw-clips.csv
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import Counter
from pathlib import Path

SESSION_GAP_MS = 10 * 60 * 1000


def clip_key(name: str, sessions: dict[int, str]) -> str:
    """The recording a file comes from (see the module doc); ``sessions`` maps egohands timestamps to sessions."""
    head = name.split(".rf.", 1)[0]
    head = head.split(".", 1)[1] if head.startswith("training__") else head  # training__rock.<original>
    if m := re.match(r"egohands-public-(\d+)", head):
        return sessions[int(m.group(1))]
    if m := re.match(r"(.+?)_(?:MOV|mp4|mov)-\d+_jpg$", head):
        return "video/" + m.group(1)
    if m := re.match(r"(Screen-Shot|Photo-on)-(\d+-\d+-\d+)", head):
        return f"{m.group(1)}/{m.group(2)}"
    if m := re.match(r"(\d{8})_\d{6}_jpg$", head):
        return "phone/" + m.group(1)
    if re.match(r"\d+_png$", head):
        return "numbered-frames"
    if head.startswith("youtube-"):
        return "youtube"
    return "other/" + re.sub(r"[-_]?\d+", "", head)


def egohands_sessions(names: list[str]) -> dict[int, str]:
    stamps = sorted({int(m.group(1)) for n in names if (m := re.search(r"egohands-public-(\d+)", n))})
    out: dict[int, str] = {}
    k = 0
    for i, t in enumerate(stamps):
        if i and t - stamps[i - 1] > SESSION_GAP_MS:
            k += 1
        out[t] = f"egohands/{k:02d}"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sxsw", type=Path, help="the sxsw ImageFolder (rock / paper / scissors)")
    ap.add_argument("out", type=Path, help="manifest CSV to write (path,label,group)")
    a = ap.parse_args(argv)
    files = sorted(p for p in a.sxsw.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    sessions = egohands_sessions([p.name for p in files])
    rows = [(p.resolve(), p.parent.name, clip_key(p.name, sessions)) for p in files]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        w.writerows(rows)
    sizes = Counter(g for _, _, g in rows)
    print(f"{len(rows)} photos in {len(sizes)} recordings -> {a.out}; largest: "
          + ", ".join(f"{g} {n}" for g, n in sizes.most_common(5)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
