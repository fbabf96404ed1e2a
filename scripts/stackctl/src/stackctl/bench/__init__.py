"""``make bench``: what full observability costs, measured on the native twin.

    uv run --frozen python -m stackctl.bench

One native stack (temporary STACK_DIR, ports as the environment says: STACK_PORT_OFFSET) whose
own api-svc and processor-svc are the **full** variant, exporting spans to a local OTLP/HTTP
sink; beside it the **bare** variant (the same services, instrumentation switched off by
settings) and the **peer** (the same services instrumented the usual way, stackctl.bench_peer),
each a gunicorn pair with 2 workers on ports of its own, bare with its own gateway too. Load is
wrk (and hey for /metrics scrapes), one measurement at a time, variants alternating in rotated
order, ``BENCH_ROUNDS`` rounds, medians reported. docs/performance.md (What observability
costs) explains the method, bench/README.md what is written: bench/results.json, beside it
bench/chart.svg, and a Markdown table on stdout. One module per job:

- ``__main__``: the entry point, start to end;
- ``settings``: the variants, routes, concurrency and the ``BENCH_*`` knobs;
- ``load``: wrk and hey command lines, the wrk Lua scripts, parsing their output;
- ``accounting``: CPU per request and the workers' memory, from /proc (stackctl.procfs);
- ``deployments``: where each variant runs (the side variants with their own nginx);
- ``sink``: the OTLP/HTTP receiver the spans are exported to;
- ``runner``: the measurements, in the order they run;
- ``report``: statistics, targets, the machine, results.json and the Markdown table;
- ``chart``: chart.svg from results.json (also on its own: ``python -m stackctl.bench.chart``).
"""
