import pytest

from envs.choices import Registry, check_choice, unknown_choice


def test_a_near_miss_names_the_nearest_valid_choice():
    with pytest.raises(
        ValueError, match=r"^unknown bandit 'thomson'; valid: uniform, thompson \(did you mean 'thompson'\?\)$"
    ):
        check_choice("thomson", ["uniform", "thompson"], "bandit")
    assert (
        str(unknown_choice("bandit", "zzz", ["uniform", "thompson"]))
        == "unknown bandit 'zzz'; valid: uniform, thompson"
    )
    assert check_choice("uniform", ("uniform",), "bandit") == "uniform"


def test_a_registry_registers_once_and_looks_up_with_the_same_error():
    registry: Registry[int] = Registry("thing")
    registry.register("one")(1)
    with pytest.raises(ValueError, match="thing 'one' is already registered"):
        registry.register("one")(2)
    assert registry["one"] == 1 and list(registry) == ["one"] and len(registry) == 1
    assert "one" in registry and "two" not in registry and registry.get("two") is None
    with pytest.raises(ValueError, match=r"unknown thing 'oen'; valid: one \(did you mean 'one'\?\)"):
        registry["oen"]
