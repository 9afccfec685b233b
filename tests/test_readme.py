"""The README is a guide: no leftover template text, and every docs/ page it links exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_has_no_placeholders_and_its_doc_links_exist() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert not re.search(r"\b[A-Z]+(?:_[A-Z]+)*_PLACEHOLDER\b|\bTODO\b|\bTBD\b", text)
    links = re.findall(r"\]\((docs/[^)#\s]+)", text)
    assert links and all((REPO / link).is_file() for link in links), [x for x in links if not (REPO / x).is_file()]
