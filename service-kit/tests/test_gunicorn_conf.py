"""gunicorn's settings come from the same typed settings as the app: defaults, values,
and a clear failure at start for an invalid one."""

import json
import os
import subprocess
import sys

import pytest

from service_kit.settings import (
    GunicornSettings,
    InvalidSettingsError,
    ObservabilitySettings,
    from_environment,
)

VARIABLES = (
    "PORT",
    "WEB_CONCURRENCY",
    "METRICS_PORT",
    "BIND_HOST",
    "GRACEFUL_TIMEOUT",
    "SERVICE_NAME",
    "LOG_LEVEL",
    "METRICS_ENABLED",
)
CONF = "python:service_kit.gunicorn_conf"
# What the config module hands gunicorn, printed as JSON by a fresh interpreter.
PRINT_CONF = """
import json
import service_kit.gunicorn_conf as c
print(json.dumps({
    "bind": c.bind, "workers": c.workers, "graceful_timeout": c.graceful_timeout,
    "loglevel": c.loglevel, "root_level": c.logconfig_dict["root"]["level"],
    "service": c._settings.service_name,
    "metrics_port": c._settings.metrics_port, "metrics_enabled": c._settings.metrics_enabled,
}))
"""


def _environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    return {**env, **values}


def _conf(**values: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PRINT_CONF],
        env=_environment(**values),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    conf: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return conf


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.usefixtures("clean_env")
def test_defaults_are_unchanged() -> None:
    settings = from_environment(GunicornSettings)
    assert (settings.bind_host, settings.port) == ("0.0.0.0", 8000)  # noqa: S104
    assert (settings.web_concurrency, settings.graceful_timeout) == (2, 30)
    assert (settings.service_name, settings.log_level) == ("gunicorn", "info")
    assert (settings.metrics_port, settings.metrics_enabled) == (None, True)


def test_the_config_module_takes_every_value_from_the_settings() -> None:
    conf = _conf(
        PORT="8123",
        BIND_HOST="127.0.0.1",
        WEB_CONCURRENCY="3",
        GRACEFUL_TIMEOUT="7",
        LOG_LEVEL="warning",
        SERVICE_NAME="conf-svc",
        METRICS_PORT="9123",
        METRICS_ENABLED="false",
    )
    assert conf["bind"] == ["127.0.0.1:8123"]
    assert (conf["workers"], conf["graceful_timeout"], conf["loglevel"]) == (3, 7, "warning")
    assert (conf["root_level"], conf["service"]) == ("WARNING", "conf-svc")
    assert (conf["metrics_port"], conf["metrics_enabled"]) == (9123, False)


def test_the_config_module_defaults() -> None:
    conf = _conf()
    assert conf["bind"] == ["0.0.0.0:8000"]
    assert (conf["workers"], conf["graceful_timeout"], conf["loglevel"]) == (2, 30, "info")
    assert (conf["root_level"], conf["service"]) == ("INFO", "gunicorn")
    assert (conf["metrics_port"], conf["metrics_enabled"]) == (None, True)


def test_an_empty_metrics_port_is_unset(clean_env: pytest.MonkeyPatch) -> None:
    # The benchmark's variants pass METRICS_PORT= to switch the master's endpoint off.
    clean_env.setenv("METRICS_PORT", "")
    assert from_environment(GunicornSettings).metrics_port is None


def test_the_app_settings_read_the_same_fields() -> None:
    served = set(ObservabilitySettings.model_fields)
    assert {"port", "web_concurrency", "metrics_port", "bind_host", "graceful_timeout"} <= served
    assert set(GunicornSettings.model_fields) == served


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WEB_CONCURRENCY", "0", "greater than or equal to 1"),
        ("GRACEFUL_TIMEOUT", "soon", "valid integer"),
        ("METRICS_PORT", "nine", "valid integer"),
        ("PORT", "70000", "less than or equal to 65535"),
        ("LOG_LEVEL", "loud", "'debug', 'info', 'warning' or 'error'"),
        ("METRICS_ENABLED", "perhaps", "valid boolean"),
        ("SERVICE_NAME", "Not A Name", "should match pattern"),
    ],
)
def test_an_invalid_value_names_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(InvalidSettingsError) as raised:
        from_environment(GunicornSettings)
    message = str(raised.value)
    assert message.startswith("invalid settings in the environment (GunicornSettings):")
    assert f"{name}={value!r}: " in message
    assert expected in message


def test_gunicorn_stops_at_start_on_an_invalid_value() -> None:
    # (WEB_CONCURRENCY=many fails earlier, in gunicorn's own import: it reads that one too.)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "unused:app",
            "-c",
            "python:service_kit.gunicorn_conf",
        ],
        env=_environment(GRACEFUL_TIMEOUT="soon", METRICS_PORT="9x"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Error: invalid settings in the environment (GunicornSettings):" in result.stderr
    assert "GRACEFUL_TIMEOUT='soon': Input should be a valid integer" in result.stderr
    assert "METRICS_PORT='9x': Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Listening at" not in result.stderr + result.stdout


def test_a_worker_freezes_start_up_objects_and_collects_young_ones_less_often() -> None:
    probe = (
        "import gc, service_kit.gunicorn_conf as c; c.post_worker_init(None); "
        "print(gc.get_freeze_count() > 0, gc.get_threshold()[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["True", str(10_000)]
