"""The registry and the config override machinery."""

from __future__ import annotations

import dataclasses

import pytest

from cloakbench.core.component import Component
from cloakbench.core.config import ConfigError, apply_overrides, parse_set_options
from cloakbench.core.registry import Registry, RegistryError


def make_registry() -> Registry:
    registry = Registry("widget")

    @registry.register("sds-")
    class A:
        pass

    @registry.register("sds+")
    class B:
        pass

    @registry.register("advdm")
    class C:
        pass

    return registry


def test_duplicate_name_is_refused():
    registry = make_registry()
    with pytest.raises(RegistryError, match="already registered"):
        registry.register("advdm")(object)


def test_near_miss_suggests_the_real_name():
    registry = make_registry()
    with pytest.raises(RegistryError, match=r"did you mean 'advdm'"):
        registry.get("advdn")


def test_all_and_comma_lists_resolve_in_order_and_validate_everything_first():
    registry = make_registry()
    assert registry.resolve("all") == ["sds-", "sds+", "advdm"]
    assert registry.resolve("advdm, sds-") == ["advdm", "sds-"]
    assert registry.resolve("all", all_names=["advdm"]) == ["advdm"]
    with pytest.raises(RegistryError, match="unknown widget 'sdss'"):
        registry.resolve("advdm,sdss")


def test_registration_sets_the_registry_name():
    registry = make_registry()
    assert registry.get("sds-").registry_name == "sds-"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    steps: int = 100
    eps: float = 16.0
    strengths: tuple[float, ...] = (0.1, 0.3)
    mode: str = "sample"
    enabled: bool = False
    target: str | None = None


class Demo(Component):
    """Demo component: one line shown by bench list.

    More text that is not shown.
    """

    Config = DemoConfig
    registry_name = "demo"


def test_overrides_are_parsed_by_field_type():
    config = apply_overrides(
        DemoConfig(),
        {"steps": "50", "eps": "8", "strengths": "0.2,0.4", "enabled": "true", "target": "none"},
        owner="demo",
    )
    assert config == DemoConfig(steps=50, eps=8.0, strengths=(0.2, 0.4), enabled=True, target=None)


def test_unknown_field_lists_the_real_fields():
    with pytest.raises(ConfigError, match=r"demo has no setting 'stpes'.*steps, eps"):
        apply_overrides(DemoConfig(), {"stpes": "3"}, owner="demo")


def test_bad_value_names_the_field():
    with pytest.raises(ConfigError, match=r"demo.steps: expected int, got 'many'"):
        apply_overrides(DemoConfig(), {"steps": "many"}, owner="demo")


def test_set_options_split_on_the_last_dot_so_names_may_contain_symbols():
    assert parse_set_options(["sds-.steps=50", "sdedit.strengths=0.1,0.3"]) == {
        "sds-": {"steps": "50"},
        "sdedit": {"strengths": "0.1,0.3"},
    }
    with pytest.raises(ConfigError, match="NAME.FIELD=VALUE"):
        parse_set_options(["steps=50"])


def test_component_description_is_the_first_docstring_line_and_identity_is_stable():
    demo = Demo.from_overrides({"steps": "7"})
    assert Demo.description() == "Demo component: one line shown by bench list."
    assert demo.identity() == {
        "name": "demo",
        "version": 1,
        "config": {
            "steps": 7,
            "eps": 16.0,
            "strengths": [0.1, 0.3],
            "mode": "sample",
            "enabled": False,
            "target": None,
        },
    }
