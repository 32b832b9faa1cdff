"""The one typed config loader (``gbuf.config_files``) behind ``gbuf train`` and ``gbuf degrade``."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from typing import Literal

import pytest

from gbuf import config_files as cf
from gbuf.errors import GbufError


@dataclasses.dataclass
class Inner:
    size: int = 3
    ratio: float = 0.5
    mode: Literal["fast", "exact"] = "fast"
    names: list[str] = dataclasses.field(default_factory=lambda: ["a"])
    limit: float | None = None


@dataclasses.dataclass
class Outer:
    title: str = "x"
    enabled: bool = True
    extra: dict = dataclasses.field(default_factory=dict)
    inner: Inner = dataclasses.field(default_factory=Inner)

    def validate(self, source: str) -> None:
        if self.inner.size < 1:
            raise GbufError(f"{source}: inner.size must be >= 1")


def test_layers_types_and_round_trip(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('title = "t"\n[inner]\nsize = 5\nratio = 2\nnames = ["p", "q"]\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("title: t\ninner:\n  size: 5\n  ratio: 2\n  names: [p, q]\n")
    a = cf.load(Outer, toml)
    assert a == cf.load(Outer, yaml)
    assert (a.title, a.inner.size, a.inner.names, a.inner.mode) == ("t", 5, ["p", "q"], "fast")
    assert a.inner.ratio == 2.0 and isinstance(a.inner.ratio, float)   # an int where a float goes
    # overrides by dotted name win over the file; a section given as a table merges
    b = cf.load(Outer, toml, {"inner.mode": "exact", "inner": {"limit": 3}, "extra": {"k": [1]}})
    assert (b.inner.mode, b.inner.limit, b.inner.size, b.extra) == ("exact", 3.0, 5, {"k": [1]})
    # the TOML written back (tomli-w) is itself a config file giving the same configuration;
    # None (no TOML null) is left out and reads back as its default
    saved = cf.save_toml(b, tmp_path / "saved.toml", "resolved\nsecond line")
    text = saved.read_text()
    assert text.startswith("# resolved\n# second line\n")
    assert cf.load(Outer, saved) == b
    c = cf.copy(b)
    c.inner.limit = None
    assert cf.load(Outer, cf.save_toml(c, tmp_path / "none.toml")) == c
    assert "limit" not in (tmp_path / "none.toml").read_text()
    # copies share nothing
    c.inner.names.append("r")
    assert b.inner.names == ["p", "q"]


@pytest.mark.parametrize("text, message", [
    ("[inner]\nsise = 1\n", r"c.toml: unknown option inner.sise \(known here: inner.limit, inner.mode,"),
    ("colour = 1\n", r"c.toml: unknown option colour \(known here: enabled, extra, inner, title\)"),
    ('[inner]\nsize = "big"\n', r"c.toml: inner.size must be an integer, got 'big'"),
    ("[inner]\nsize = 2.5\n", r"c.toml: inner.size must be an integer, got 2.5"),
    ("enabled = 1\n", r"c.toml: enabled must be true or false, got 1"),
    ('[inner]\nmode = "slow"\n', r"c.toml: inner.mode must be one of fast, exact, got 'slow'"),
    ("[inner]\nnames = [1]\n", r"c.toml: inner.names\[0\] must be a string, got 1"),
    ('[inner]\nnames = "p"\n', r"c.toml: inner.names must be a list, got 'p'"),
    ("inner = 3\n", r"c.toml: inner must be a table"),
    ("[inner]\nsize = 0\n", r"c.toml: inner.size must be >= 1"),          # the class's validate
    ("[inner\n", r"c.toml: cannot parse config"),
])
def test_errors_are_one_line_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(GbufError, match=message) as err:
        cf.load(Outer, path)
    assert "\n" not in str(err.value)


def test_missing_file_bad_suffix_and_override_source(tmp_path):
    with pytest.raises(GbufError, match="no such config file"):
        cf.load(Outer, tmp_path / "none.toml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(GbufError, match=r"c.json: config must be .toml, .yaml or .yml"):
        cf.load(Outer, tmp_path / "c.json")
    with pytest.raises(GbufError, match=r"--set: inner.ratio must be a number, got 'wide'"):
        cf.load(Outer, None, {"inner.ratio": "wide"}, overrides_source="--set")


def test_parse_set_reads_toml_values_else_text():
    got = cf.parse_set(["a.b=50", "c=1e-4", "d=true", "e=[1, 2]", 'f="q"', "g=runs/x", "h=a=b"])
    assert got == {"a.b": 50, "c": 1e-4, "d": True, "e": [1, 2], "f": "q", "g": "runs/x", "h": "a=b"}
    with pytest.raises(GbufError, match=r"--set 'nokey': expected KEY=VALUE"):
        cf.parse_set(["nokey"])
    assert cf.nest({"a.b": 1, "a": {"c": 2}, "a.d.e": 3}) == {"a": {"b": 1, "c": 2, "d": {"e": 3}}}


def test_retired_options_are_ignored_with_a_warning(tmp_path, caplog):
    from gbuf.train import config as train_config

    # the config.toml of a run made before data.image_transform was removed still resumes
    old = tmp_path / "config.toml"
    old.write_text('model = "rdg-s"\n[data]\nframes = 7\nimage_transform = "srgb"\n')
    with caplog.at_level(logging.WARNING, logger="gbuf.config_files"):
        c = train_config.load_file(old)
    assert (c.model, c.data.frames) == ("rdg-s", 7)
    assert "data.image_transform is no longer used" in caplog.text
    assert not hasattr(c.data, "image_transform")
    with pytest.raises(GbufError, match="unknown option data.image_transform"):
        train_config.from_dict({"data": {"image_transform": "srgb"}})


def test_both_configs_use_it_and_datasets_never_import_train():
    code = ("import sys\n"
            "from gbuf.datasets.degrade import api, config, realworld\n"
            "from gbuf.datasets import loader, preview, colour\n"
            "bad = sorted(m for m in sys.modules if m.startswith('gbuf.train') or m in ('torch', 'matplotlib'))\n"
            "assert not bad, bad\n"
            "assert config.config_files.load is __import__('gbuf.config_files').config_files.load\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
