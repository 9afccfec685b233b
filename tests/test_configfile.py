"""One reader for every config file (pipelines, experiments): formats and errors."""

from __future__ import annotations

import pytest

from bglab.errors import ConfigError
from bglab.io.configfile import read_config_file


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


# ----------------------------------------------------------------------------- field checks

@pytest.mark.parametrize(("value", "kw", "want"), [
    (3, {}, 3.0), (3.0, {"integer": True}, 3), (10**30, {"integer": True}, 10**30), (0.5, {"lo": 0, "hi": 1}, 0.5),
    ("0.5", {"text": True}, 0.5), (" 7 ", {"integer": True, "text": True}, 7),
])
def test_check_number_reads(value, kw, want):
    from bglab.io.configfile import check_number

    got = check_number("a.b", value, **kw)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(("value", "kw", "message"), [
    (True, {}, "a.b: expected a number, got True"),
    ("0.5", {}, "a.b: expected a number, got '0.5'"),  # text only where the config says so
    ("half", {"text": True}, "a.b: expected a number, got 'half'"),
    (3.5, {"integer": True}, "a.b: expected an integer, got 3.5"),
    ("3.0", {"integer": True, "text": True}, "a.b: expected an integer, got '3.0'"),
    (float("nan"), {}, "a.b: nan is not a finite number"),
    (float("inf"), {"integer": True}, "a.b: expected an integer, got inf"),
    (-1, {"lo": 0}, r"a.b: -1 is out of range \(use a value in \[0, inf\]\)"),
    (2, {"hi": 1}, r"a.b: 2 is out of range \(use a value in \[-inf, 1\]\)"),
])
def test_check_number_refuses_naming_the_key(value, kw, message):
    from bglab.io.configfile import check_number

    with pytest.raises(ConfigError, match=f"^{message}"):
        check_number("a.b", value, **kw)


def test_check_bool_reads_text_only_where_declared():
    from bglab.io.configfile import check_bool

    assert check_bool("k", True) is True and check_bool("k", "Yes", text=True) is True
    assert check_bool("k", "0", text=True) is False and check_bool("k", " Off", text=True) is False
    assert check_bool("k", 1, text=True) is True and check_bool("k", 0, text=True) is False  # -O key=1 (JSON)
    for bad, kw in (("yes", {}), (1, {}), (2, {"text": True}), (0.5, {"text": True}), ("maybe", {"text": True}),
                    ("", {"text": True}), (None, {"text": True})):
        with pytest.raises(ConfigError, match="k: expected true or false"):
            check_bool("k", bad, **kw)


def test_pipeline_and_experiment_configs_share_the_rules():
    """The same declared fields (bglab.io.schema) behind both configs: the pipeline also reads text (its values
    come from --set; declared text=True), the experiment config does not; the messages are the same."""
    from bglab.experiment.config import TRAIN
    from bglab.io.schema import Field
    from bglab.pipeline import Pipeline

    steps = [{"locate": {"backend": "full"}}, {"crop": {"margin": "0.5", "square": "yes"}}]
    crop = Pipeline.from_config({"steps": steps}).steps[1].to_config()
    assert crop["margin"] == 0.5 and crop["square"] is True
    with pytest.raises(ConfigError, match=r"^train.lr: expected a number, got '0.5'"):
        TRAIN.build("train", {"lr": "0.5"})
    with pytest.raises(ConfigError, match=r"^train.augment.flip: expected true or false, got 'yes'"):
        TRAIN.build("train", {"augment": {"flip": "yes"}})
    with pytest.raises(ConfigError, match=r"steps\[0\]\.crop\.margin: -1 is out of range") as pipe_err:
        Pipeline.from_config({"steps": [{"crop": {"margin": -1}}]})  # checked before the steps' order
    with pytest.raises(ConfigError, match=r"train.lr: -1 is out of range") as exp_err:
        Field("lr", "float", lo=0).read("train", -1, text=False)
    assert pipe_err.value.hint == exp_err.value.hint == "use a value in [0, inf]"
