"""One reader for every config file (pipelines, experiments): formats and errors."""

from __future__ import annotations

import pytest

from bglab.configfile import read_config_file
from bglab.errors import ConfigError


@pytest.mark.parametrize(("name", "text"), [("c.yaml", "a: 1\nb: [x]\n"), ("c.toml", 'a = 1\nb = ["x"]\n'),
                                            ("c.json", '{"a": 1, "b": ["x"]}')])
def test_formats_give_the_same_mapping(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    assert read_config_file(p) == {"a": 1, "b": ["x"]}


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="experiment config not found") as e:
        read_config_file(tmp_path / "none.yaml", what="experiment config")
    assert "none.yaml" in str(e.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        read_config_file(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_config_file(lst, shape_hint="a pipeline config has a 'steps' list")
