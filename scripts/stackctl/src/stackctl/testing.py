"""Small helpers the test suites share."""

import json
from typing import Any


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line, parsed; raises on a line that is not one JSON object."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            parsed = json.loads(line)
            if not isinstance(parsed, dict):
                raise ValueError(f"not a JSON object: {line!r}")
            lines.append(parsed)
    return lines


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def series_count(exposition: str) -> int:
    """How many samples (series) an exposition holds."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    return sum(len(family.samples) for family in text_string_to_metric_families(exposition))
