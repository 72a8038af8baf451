"""ConfigBase round trips / validation / overrides, and atomic writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from stetho.utils.config import ConfigBase, ConfigError
from stetho.utils.io import atomic_write, atomic_write_text, sha256_file


@dataclass
class Inner(ConfigBase):
    r: int = 64
    targets: tuple[str, ...] = ("q", "v")
    mode: Literal["lora", "full"] = "lora"


@dataclass
class Outer(ConfigBase):
    inner: Inner = field(default_factory=Inner)
    lr: float = 5e-5
    layers: list[int] | None = None
    pattern: dict[str, int] = field(default_factory=dict)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    cfg = Outer(
        inner=Inner(r=8, targets=("k",), mode="full"),
        lr=1e-3,
        layers=[0, 2],
        pattern={"v@6-11": 96},
    )
    path = tmp_path / f"cfg{suffix}"
    cfg.save(path)
    assert Outer.load(path) == cfg


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['lrr'\].*'inner', 'layers', 'lr', 'pattern'"
    ):
        Outer.from_dict({"lrr": 1})


def test_literal_and_type_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match=r"inner\.mode.*'frozen'.*\['lora', 'full'\]"):
        Outer.from_dict({"inner": {"mode": "frozen"}})
    with pytest.raises(ConfigError, match=r"inner\.r: expected an integer"):
        Outer.from_dict({"inner": {"r": "many"}})
    with pytest.raises(ConfigError, match="lr: expected a number"):
        Outer.from_dict({"lr": [1]})


def test_dotted_overrides_parse_yaml_values() -> None:
    cfg = Outer().override(["inner.r=16", "inner.targets=[q, k, v]", "lr=1e-4", "layers=null"])
    assert cfg.inner.r == 16 and cfg.inner.targets == ("q", "k", "v")
    assert cfg.lr == pytest.approx(1e-4) and cfg.layers is None
    with pytest.raises(ConfigError, match="unknown key 'rr'"):
        Outer().override(["inner.rr=1"])
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        Outer().override(["inner.r"])


def test_load_reports_file_and_syntax(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        Outer.load(bad)


def test_atomic_write_leaves_target_untouched_on_error(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("half-written")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]  # no temporary left behind


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_overrides_add_keys_to_free_form_mappings_only() -> None:
    cfg = Outer().override(["pattern.v@6-11=96", "pattern.q=8"])
    assert cfg.pattern == {"v@6-11": 96, "q": 8}
    assert isinstance(cfg.pattern["q"], int)
    with pytest.raises(ConfigError, match="valid keys are"):
        Outer().override(["inner.unknown=1"])  # dataclass sections stay strict
    with pytest.raises(ConfigError, match="has no sub-keys"):
        Outer().override(["lr.x=1"])


def test_atomic_write_respects_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.csv", "a,1\n")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "shared.csv").stat().st_mode)
    assert mode == 0o644  # readable by other users, like a plain open(); mkstemp alone gives 0o600


def test_json_formatter_keeps_extras_and_exceptions() -> None:
    import json
    import logging

    from stetho.utils.logs import JsonFormatter

    try:
        raise ValueError("bad clip")
    except ValueError:
        import sys

        exc = sys.exc_info()
    record = logging.LogRecord("stetho.x", logging.WARNING, __file__, 1, "alarm %s", ("on",), exc)
    record.machine = "slider"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "alarm on" and doc["level"] == "WARNING" and doc["machine"] == "slider"
    assert doc["time"].endswith("Z") and "ValueError: bad clip" in doc["exception"]
