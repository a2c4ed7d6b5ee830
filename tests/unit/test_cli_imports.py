"""A command imports what it uses, and nothing else: building the parser, every
``--help`` and an argument error import none of the service (its catalog of
plugins, faust, the Kafka and PostgreSQL clients); ``eventpipe status --url``
talks HTTP only; ``eventpipe trace`` reads PostgreSQL and Kafka and imports no
pipeline, plugin or service module.  Each probe runs in a fresh interpreter and
prints the modules it ended up with."""

from __future__ import annotations

from eventpipe.embedded.process import free_port
from tests.cli_probe import CLIENTS, SERVICE, loaded, probe

# Nor, for the parser, the config models (pydantic), HTTP or tracing.
PARSER_ONLY = (*SERVICE, *CLIENTS, "aiohttp", "opentelemetry.sdk", "eventpipe.settings", "pydantic")


def test_parser_and_every_help_import_no_service_module() -> None:
    results, modules = probe(
        """
        import argparse
        from eventpipe.cli.main import build_parser

        def paths(parser, path=()):
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        yield (*path, name)
                        yield from paths(sub, (*path, name))

        results = [run("--help")] + [run(*p, "--help") for p in paths(build_parser())]
        """
    )
    assert "COMMAND" in results[0][1]
    assert len(results) > 20 and all(code == 0 for code, _out, _err in results), results
    assert loaded(modules, PARSER_ONLY) == []


def test_argument_errors_import_no_service_module() -> None:
    results, modules = probe(
        """
        results = [
            run("trace"),  # EVENT_ID missing
            run("run", "--workers", "none"),  # checked as service.workers is
            run("dlq", "list", "--limit", "many"),
            run("no-such-command"),
        ]
        """
    )
    assert [code for code, _out, _err in results] == [2, 2, 2, 2], results
    assert "EVENT_ID" in results[0][2] and "--workers" in results[1][2]
    assert loaded(modules, (*SERVICE, *CLIENTS, "aiohttp")) == []


def test_status_url_talks_http_only() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    results, modules = probe(f"results = [run('status', '--url', '{url}')]")
    [(code, _out, err)] = results
    assert code == 2 and "cannot reach eventpipe" in err, err
    assert "aiohttp" in modules  # it did ask
    assert loaded(modules, (*SERVICE, *CLIENTS)) == []


def test_trace_imports_its_readers_and_no_pipeline_or_plugin() -> None:
    # Nothing listens there: the command gets as far as connecting to PostgreSQL
    # and says it could not (tests/integration/test_trace.py runs it to the end).
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    results, modules = probe(
        f"results = [run('trace', 'evt-1', '--database-url', '{url}')]",
        env={"EVENTPIPE_DATABASE_CONNECT_TIMEOUT_S": "1"},
    )
    [(code, _out, err)] = results
    assert code == 3 and "PostgreSQL" in err, err
    assert {"eventpipe.trace.lookup", "psycopg_pool", "aiokafka"} <= modules
    assert loaded(modules, SERVICE) == []
