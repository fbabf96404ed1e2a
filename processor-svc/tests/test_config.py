import pytest

from processor_svc.config import get_settings
from service_kit.settings import InvalidSettingsError


def test_an_invalid_value_fails_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESS_DELAY_SECONDS", "forever")
    monkeypatch.setenv("WEB_CONCURRENCY", "0")
    with pytest.raises(InvalidSettingsError) as raised:
        get_settings.__wrapped__()  # not the cached object
    message = str(raised.value)
    assert "PROCESS_DELAY_SECONDS='forever': Input should be a valid number" in message
    assert "WEB_CONCURRENCY='0': Input should be greater than or equal to 1" in message
