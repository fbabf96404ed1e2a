"""make profile's reading of py-spy's collapsed stacks (the runs themselves need the stack and
take minutes: `make profile`)."""

from stackctl.profile import package_of, parse_collapsed, report, shorten_paths

SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
SPAN = f"start_span ({SITE}/opentelemetry/sdk/trace/__init__.py:1100)"
LOCK = f"__enter__ ({STDLIB}/threading.py:100)"
MIDDLEWARE = "__call__ (/repo/service-kit/src/service_kit/middleware.py:80)"
QUERY = f"execute ({SITE}/sqlalchemy/engine/base.py:10)"
COLLAPSED = [
    f"{MIDDLEWARE};{SPAN};{LOCK} 3",
    f"{MIDDLEWARE};{SPAN} 1",
    f"{MIDDLEWARE};{QUERY} 4",
    # The same function on another line: one entry once line numbers are dropped.
    f"{MIDDLEWARE.replace(':80', ':95')} 2",
    f"_run (<frozen runpy>);loop ({STDLIB}/asyncio/base_events.py:600) 2",
    "",
]


def test_a_package_is_the_directory_under_site_packages_or_our_own_source() -> None:
    assert package_of(f"{SITE}/opentelemetry/sdk/trace/__init__.py") == "opentelemetry"
    assert package_of(f"{SITE}/typing_extensions.py") == "typing_extensions"
    assert package_of("/repo/api-svc/src/api_svc/db.py") == "api_svc"
    assert package_of(f"{STDLIB}/threading.py") is None
    assert package_of("<frozen runpy>") is None
    assert package_of("opentelemetry/sdk/trace/__init__.py") == "opentelemetry"
    assert package_of("python3.11/threading.py") is None


def test_standard_library_time_is_charged_to_the_package_that_called_it() -> None:
    profile = parse_collapsed(COLLAPSED)
    assert profile.samples == 12
    assert profile.by_package() == {
        "opentelemetry": 4,  # 3 of them in threading, called by start_span
        "sqlalchemy": 4,
        "service_kit": 2,
        "python (no package)": 2,
    }


def test_inclusive_counts_a_function_once_per_sample_and_own_counts_the_leaf() -> None:
    profile = parse_collapsed(COLLAPSED)
    middleware = next(frame for frame in profile.inclusive() if frame.startswith("__call__"))
    assert profile.inclusive()[middleware] == 10
    assert profile.own()[middleware] == 2
    assert profile.own()[next(f for f in profile.own() if f.startswith("__enter__"))] == 3


def test_the_report_turns_shares_into_cpu_per_request() -> None:
    text = report("message-full", parse_collapsed(COLLAPSED), 1000, 1.2, unit="request")
    assert "12 samples" in text
    assert "1,200 us of CPU per request" in text
    # 4 of 12 samples of 1,200 us: 400 us.
    assert "  33.3%         400  opentelemetry" in text
    assert "start_span (opentelemetry/sdk/trace/__init__.py)" in text


def test_collapsed_stacks_are_kept_without_the_machines_paths() -> None:
    shortened = shorten_paths("\n".join(COLLAPSED))
    assert f"{SITE}" not in shortened
    assert "start_span (opentelemetry/sdk/trace/__init__.py:1100)" in shortened
    assert "__enter__ (python3.11/threading.py:100)" in shortened
    assert "__call__ (service_kit/middleware.py:80)" in shortened
    # Still what py-spy wrote, so the same report comes out of it.
    assert (
        parse_collapsed(shortened.splitlines()).by_package()
        == parse_collapsed(COLLAPSED).by_package()
    )


def test_samples_are_told_apart_by_the_thread_or_greenlet_they_ran_in() -> None:
    exporter = (
        f"Thread._bootstrap ({STDLIB}/threading.py:1);Thread._bootstrap_inner ({STDLIB}/"
        f"threading.py:2);Thread.run ({STDLIB}/threading.py:3);BatchProcessor.worker "
        f"({SITE}/opentelemetry/sdk/_shared_internal/__init__.py:9);{SPAN} 5"
    )
    main = f"_run_module_as_main (<frozen runpy>:1);{MIDDLEWARE} 7"
    greenlet = f"Session.get ({SITE}/sqlalchemy/orm/session.py:3709);{QUERY} 2"
    profile = parse_collapsed([exporter, main, greenlet])
    assert profile.by_root() == {
        "thread: BatchProcessor.worker (opentelemetry/sdk/_shared_internal/__init__.py)": 5,
        "main thread (a worker's event loop; the master's arbiter)": 7,
        "other root: Session.get (sqlalchemy/orm/session.py)": 2,
    }
    # The frames every worker stack starts with are left out of the inclusive table.
    assert not any(frame.startswith("_run_module_as_main") for frame in profile.inclusive())
