"""`.env.example` documents every setting the services read."""

import re
import shutil
import stat
import subprocess
from pathlib import Path

from api_svc.config import Settings as ApiSettings
from processor_svc.config import Settings as ProcessorSettings
from service_kit.settings import GunicornSettings

ROOT = Path(__file__).resolve().parents[2]


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_every_service_setting_is_in_env_example() -> None:
    classes = (ApiSettings, ProcessorSettings, GunicornSettings)  # GunicornSettings: the master
    fields = {name.upper() for cls in classes for name in cls.model_fields}
    missing = fields - _documented()
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_make_env_writes_a_private_file_with_passwords(tmp_path: Path) -> None:
    # `make .env` in a copy of the two files it reads, with the usual umask 022: the file
    # holds the database and Grafana passwords, so only its owner may read it.
    for name in ("Makefile", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    result = subprocess.run(
        ["sh", "-c", "umask 022 && exec make --no-print-directory .env"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    env = tmp_path / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1)
        for line in env.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in ("POSTGRES_PASSWORD", "API_READER_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert re.fullmatch(r"[0-9a-f]{48}", values[name]), name
    assert len({values[n] for n in values if n.endswith("PASSWORD")}) == 3
