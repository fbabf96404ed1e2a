"""bench/chart.svg: req/s of each variant per route, with its CPU per request, drawn from
results.json (hand-written SVG: no plotting library, the same text for the same results).

    uv run --frozen python -m stackctl.bench.chart [bench/results.json]

rebuilds the chart beside an existing results.json without running the benchmark. One panel per
route, each with its own req/s axis (``/health`` serves ten times what ``/message/{id}`` does:
on one axis the latter's bars would be too short to compare); within a panel, bar heights are
proportional to req/s. Only ``rps``, ``cpu_ms_per_request``, ``gateway_cpu_ms_per_request`` and
``machine`` are read, so results.json files of older runs draw too.
"""

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from stackctl.bench.settings import BenchConfig

# (results key, panel title); within a panel the groups are where the load went.
ROUTES = (("health", "GET /health"), ("message", "GET /message/{id}"))
WHERE = (("direct", "direct (service port)"), ("gateway", "through the gateway"))
# Variant order in every group, with its colour (blue / grey / orange: apart in greyscale too).
VARIANTS = (("full", "#1f66b3"), ("bare", "#8c8c8c"), ("peer", "#e07b00"))
LEGEND = {
    "full": "full (as shipped)",
    "bare": "bare (instrumentation off)",
    "peer": "peer (the usual FastAPI stack)",
}

WIDTH, HEIGHT = 900, 600
PANEL_WIDTH = 370
PANEL_LEFT = (80, 520)  # x of each panel's axis
PLOT_TOP, PLOT_BOTTOM = 150, 520  # y of the axis' top and of its baseline
BAR, BAR_GAP, GROUP_GAP = 50, 16, 36
HEADROOM = 1.15  # room above the tallest bar for its labels
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"


def chart_path(results_path: Path) -> Path:
    """Where the chart of a results.json goes: beside it."""
    return results_path.with_name("chart.svg")


def nice_ceiling(value: float) -> float:
    """The axis' top: the smallest 1, 2, 4, 6 or 8 times a power of ten at or above ``value``
    (each a multiple of 4 of a round step: four gridlines at round numbers)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1.0, 2.0, 4.0, 6.0, 8.0, 10.0) if step * power >= value)


def _cpu_label(summary: Mapping[str, Any]) -> list[str]:
    service = summary.get("cpu_ms_per_request")
    lines = ["CPU n/a" if service is None else f"{service:.3f} ms"]
    nginx = summary.get("gateway_cpu_ms_per_request")
    if nginx is not None:
        lines.append(f"+{nginx:.3f} nginx")
    return lines


def _text(x: float, y: float, body: str, size: int = 12, **attrs: str) -> str:
    """One line of text, centred on ``x`` unless ``text_anchor`` says otherwise."""
    attrs = {"text_anchor": "middle", **attrs}
    extra = "".join(f" {name.replace('_', '-')}={quoteattr(v)}" for name, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}"{extra}>{escape(body)}</text>'


def _panel(route: str, title: str, left: float, results: Mapping[str, Any]) -> list[str]:
    # (where, label, [(variant, colour, summary)]): the runs results.json holds, in order.
    groups = []
    for where, label in WHERE:
        runs = results[route].get(where, {})
        bars = [(v, colour, runs[v]) for v, colour in VARIANTS if v in runs]
        if bars:
            groups.append((where, label, bars))
    top = nice_ceiling(HEADROOM * max(s["rps"] for _, _, bars in groups for _, _, s in bars))
    scale = (PLOT_BOTTOM - PLOT_TOP) / top  # px per req/s, the same for every bar of the panel
    out = [f'<g class="panel" data-route="{route}" data-axis-max="{top:g}">']
    out.append(_text(left + PANEL_WIDTH / 2, PLOT_TOP - 34, title, 15, font_weight="bold"))
    for i in range(5):  # gridlines and tick labels at 0, 1/4 .. 4/4 of the axis
        value = top * i / 4
        y = PLOT_BOTTOM - value * scale
        out.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{left + PANEL_WIDTH:.1f}" y2="{y:.1f}" '
            f'stroke="{"#444" if i == 0 else "#ddd"}" stroke-width="1"/>'
        )
        out.append(_text(left - 6, y + 4, f"{value:,.0f}", 11, text_anchor="end", fill="#444"))
    out.append(
        _text(
            left - 52,
            (PLOT_TOP + PLOT_BOTTOM) / 2,
            "req/s",
            12,
            fill="#444",
            transform=f"rotate(-90 {left - 52:.1f} {(PLOT_TOP + PLOT_BOTTOM) / 2:.1f})",
        )
    )
    used = sum(len(bars) * BAR + (len(bars) - 1) * BAR_GAP for _, _, bars in groups)
    x = left + (PANEL_WIDTH - used - GROUP_GAP * (len(groups) - 1)) / 2
    for where, label, bars in groups:
        start = x
        for variant, colour, summary in bars:
            rps = float(summary["rps"])
            height = rps * scale
            y = PLOT_BOTTOM - height
            out.append(
                f'<rect class="bar" data-route="{route}" data-where="{where}" '
                f'data-variant="{variant}" data-rps="{rps:g}" x="{x:.1f}" y="{y:.2f}" '
                f'width="{BAR}" height="{height:.2f}" fill="{colour}">'
                f"<title>{escape(f'{title} {where} {variant}: {rps:,.0f} req/s')}</title></rect>"
            )
            labels = [f"{rps:,.0f}", *_cpu_label(summary)]
            for n, line in enumerate(reversed(labels)):
                weight = {"font_weight": "bold"} if n == len(labels) - 1 else {}
                out.append(_text(x + BAR / 2, y - 5 - 13 * n, line, 11, **weight))
            x += BAR + BAR_GAP
        middle = (start + x - BAR_GAP) / 2
        out.append(_text(middle, PLOT_BOTTOM + 20, label, 12, fill="#222"))
        x += GROUP_GAP - BAR_GAP
    out.append("</g>")
    return out


def _subtitle(machine: Mapping[str, Any]) -> str:
    """When and where: the run's start (UTC, to the minute) and the machine it ran on."""
    date = machine.get("date")  # ISO 8601 in UTC, as machine_info writes it
    parts = [f"{date[:10]} {date[11:16]} UTC" if date else "date unknown"]
    cpu = str(machine.get("cpu_model", "unknown CPU"))
    parts.append(cpu if machine.get("cores") is None else f"{cpu}, {machine['cores']} cores")
    if machine.get("memory_gib") is not None:
        parts.append(f"{machine['memory_gib']:g} GiB")
    if machine.get("os"):
        parts.append(str(machine["os"]))
    if machine.get("python"):
        parts.append(f"Python {machine['python']}")
    return ", ".join(parts)


def render(results: Mapping[str, Any]) -> str:
    """The chart of one results.json, as SVG text."""
    machine = results.get("machine", {})
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="{FONT}" fill="#111">',
        "<title>make bench: requests per second by route and variant</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        _text(
            WIDTH / 2,
            30,
            "make bench: what observability costs (req/s, median of rounds)",
            18,
            font_weight="bold",
        ),
        _text(WIDTH / 2, 52, _subtitle(machine), 13, fill="#333"),
    ]
    # Centred, from an estimate of the labels' width (6.6 px per character at 12 px).
    widths = [20 + 6.6 * len(LEGEND[variant]) for variant, _ in VARIANTS]
    legend_x = (WIDTH - sum(widths) - 40 * (len(widths) - 1)) / 2
    for (variant, colour), width in zip(VARIANTS, widths, strict=True):
        out.append(f'<rect x="{legend_x:.1f}" y="68" width="14" height="14" fill="{colour}"/>')
        out.append(_text(legend_x + 20, 80, LEGEND[variant], 12, text_anchor="start"))
        legend_x += width + 40
    for (route, title), left in zip(ROUTES, PANEL_LEFT, strict=True):
        out += _panel(route, title, left, results)
    out.append(
        _text(
            WIDTH / 2,
            HEIGHT - 22,
            "Above each bar: req/s, then CPU ms per request of the "
            "serving gunicorn (+ nginx's, through the gateway). Each panel has its own axis.",
            11,
            fill="#444",
        )
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_chart(results_path: Path, results: Mapping[str, Any]) -> Path:
    """chart.svg beside ``results_path``; returns where it went."""
    path = chart_path(results_path)
    path.write_text(render(results))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stackctl.bench.chart",
        description="Rebuild chart.svg beside a results.json, without running the benchmark.",
    )
    parser.add_argument("results", nargs="?", type=Path, default=BenchConfig.results)
    args = parser.parse_args(argv)
    path = write_chart(args.results, json.loads(args.results.read_text()))
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
