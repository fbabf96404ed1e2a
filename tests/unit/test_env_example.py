"""`.env.example` documents every setting the services read."""

import re
from pathlib import Path

from api_svc.config import Settings as ApiSettings
from processor_svc.config import Settings as ProcessorSettings

ROOT = Path(__file__).resolve().parents[2]


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_every_service_setting_is_in_env_example() -> None:
    fields = {name.upper() for name in (*ApiSettings.model_fields, *ProcessorSettings.model_fields)}
    missing = fields - _documented()
    assert not missing, f"add to .env.example: {sorted(missing)}"
