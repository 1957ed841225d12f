"""Settings from defaults, shipyard.toml and the environment."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from shipyard.config import load_settings
from shipyard.errors import ConfigError
from shipyard.serving.limits import DEFAULT_LIMITS, RequestLimits


def test_defaults_put_everything_in_the_home(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "h")
    assert settings.database_url == f"sqlite:///{tmp_path / 'h' / 'shipyard.db'}"
    assert settings.artifact_url == str(tmp_path / "h" / "artifacts")


def test_environment_overrides_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shipyard.toml").write_text(
        'artifact_root = "memory://x"\n[serving]\nport = 9000\n'
    )
    monkeypatch.setenv("SHIPYARD_SERVING__PORT", "9100")
    settings = load_settings()
    assert settings.artifact_url == "memory://x"
    assert settings.serving.port == 9100


def test_a_broken_toml_file_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "shipyard.toml").write_text("db_url = \n")
    with pytest.raises(ConfigError, match=r"shipyard\.toml is not valid TOML"):
        load_settings()


def test_a_wrong_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_SERVING__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"serving\.port"):
        load_settings()


def test_an_unknown_setting_is_refused(tmp_path: Path) -> None:
    (tmp_path / "shipyard.toml").write_text('databse_url = "sqlite:///x"\n')
    with pytest.raises(ConfigError, match="databse_url"):
        load_settings()


def test_a_missing_explicit_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_CONFIG", "/nonexistent/shipyard.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


class TestServingLimits:
    """``serving.limits`` bounds every request of a server; a bad one is a clear config error."""

    def test_the_settings_defaults_are_the_request_limits_defaults(self) -> None:
        limits = load_settings().serving.limits
        assert set(type(limits).model_fields) == {f.name for f in fields(RequestLimits)}
        assert RequestLimits.from_settings(limits) == RequestLimits() == DEFAULT_LIMITS

    def test_nested_environment_variables_and_the_toml_file_set_them(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "shipyard.toml").write_text(
            "[serving]\nthreads = 3\n[serving.limits]\nmax_rows = 7\nmax_depth = 4\n"
        )
        monkeypatch.setenv("SHIPYARD_SERVING__LIMITS__MAX_ROWS", "5")
        monkeypatch.setenv("SHIPYARD_SERVING__QUEUE", "0")
        serving = load_settings().serving
        assert (serving.limits.max_rows, serving.limits.max_depth) == (5, 4)
        assert (serving.threads, serving.queue) == (3, 0)
        assert RequestLimits.from_settings(serving.limits).max_body_bytes == 1024 * 1024

    @pytest.mark.parametrize(
        ("name", "value", "named"),
        [
            ("SHIPYARD_SERVING__LIMITS__MAX_ROWS", "many", r"serving\.limits\.max_rows"),
            ("SHIPYARD_SERVING__LIMITS__MAX_ROWS", "0", r"serving\.limits\.max_rows.*greater"),
            ("SHIPYARD_SERVING__LIMITS__MAX_ROWS", "2.5", r"serving\.limits\.max_rows"),
            ("SHIPYARD_SERVING__LIMITS__MAX_ROW", "5", r"serving\.limits\.max_row.*not permitted"),
            ("SHIPYARD_SERVING__THREADS", "0", r"serving\.threads"),
            ("SHIPYARD_SERVING__QUEUE", "-1", r"serving\.queue"),
        ],
    )
    def test_a_bad_limit_is_a_config_error_naming_it(
        self, monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
    ) -> None:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=named):
            load_settings()


class TestYamlErrorLine:
    """A broken YAML file is named in one line: where, then what (PyYAML's text spans lines)."""

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            (
                "not yaml: [\n",
                "line 2, column 1: expected the node content, but found '<stream end>'",
            ),
            ("a: 1\n b: 2\n", "line 2, column 3: mapping values are not allowed here"),
        ],
    )
    def test_one_line_with_the_place(self, text: str, line: str) -> None:
        import yaml

        from shipyard.config import yaml_error_line

        with pytest.raises(yaml.YAMLError) as caught:
            yaml.safe_load(text)
        said = yaml_error_line(caught.value)
        assert said.startswith(line) and "\n" not in said

    def test_quota_apply_says_it_in_one_line(self, tmp_path: Path) -> None:
        from shipyard.quota.pools import read_pool_file

        bad = tmp_path / "pools.yaml"
        bad.write_text("pools: [\n")
        with pytest.raises(ConfigError) as caught:
            read_pool_file(bad, 0.5)
        assert "\n" not in str(caught.value)
        assert str(caught.value).startswith(f"{bad} is not valid YAML: line 2, column 1: ")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "is empty; nothing was changed"),
        ("# just a comment\n", "is empty; nothing was changed"),
        ("- a\n- b\n", "holds a list, not a mapping with `pools:`"),
    ],
)
def test_a_pools_file_without_pools_is_refused_in_plain_words(
    tmp_path: Path, text: str, said: str
) -> None:
    from shipyard.quota.pools import read_pool_file

    path = tmp_path / "pools.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=said):
        read_pool_file(path, 0.5)
