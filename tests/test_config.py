from dataclasses import dataclass, field

import pytest

from semmae.config import build_config, list_presets, load_yaml, resolve_config
from semmae.errors import UserError
from semmae.utils.plain_config import config_to_dict


@dataclass
class Demo:
    lr: float = 1e-3
    epochs: int = 10
    name: str = "x"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    mode: str = field(default="a", metadata={"choices": ("a", "b")})
    extra: int | None = None


def test_precedence_defaults_yaml_flags(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("lr: 0.5\nepochs: 3\nsizes: [4, 5]\n")
    cfg = resolve_config(Demo, {"config": str(yml), "epochs": "7", "flag": True})
    assert (cfg.lr, cfg.epochs, cfg.sizes, cfg.flag, cfg.name) == (0.5, 7, (4, 5), True, "x")
    assert config_to_dict(cfg)["sizes"] == [4, 5]


def test_errors_name_the_field(tmp_path):
    with pytest.raises(UserError, match="unknown config key.*bogus"):
        build_config(Demo, {"bogus": 1})
    with pytest.raises(UserError, match=r"'epochs' \(--epochs\) expects int, got '1.5'"):
        build_config(Demo, {"epochs": "1.5"})
    with pytest.raises(UserError, match="--mode must be one of a, b"):
        build_config(Demo, {"mode": "c"})
    assert build_config(Demo, {"extra": None}).extra is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(str(bad))
    with pytest.raises(UserError, match="neither a file nor a preset"):
        load_yaml("no/such/preset")


def test_presets_are_mappings():
    for name in list_presets():
        assert isinstance(load_yaml(name), dict), name
