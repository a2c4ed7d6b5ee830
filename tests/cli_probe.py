"""Run ``eventpipe`` commands in a fresh interpreter and list the modules they
loaded (tests/unit/test_cli_imports.py, tests/integration/test_trace.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping

# What the service needs and a command line does not: faust and its ``mode``, the
# engines and schema libraries the plugins load, the service itself (config with
# its catalog, runner, HTTP app) and the plugin packages.
SERVICE = (
    "faust",
    "mode",
    "eventpipe.service",
    "eventpipe.connectors",
    "eventpipe.pipelines",
    "eventpipe.transforms",
    "eventpipe.console",
    "eventpipe.sink",
    "jq",
    "jaq",
    "jsonschema_rs",
    "fastavro",
    "jinja2",
)
CLIENTS = ("aiokafka", "psycopg", "psycopg_pool")

HEAD = """
import contextlib, io, json, sys
from eventpipe.cli.main import main

def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()
"""
TAIL = """
print(json.dumps({"results": results, "modules": sorted(sys.modules)}))
"""


def probe(body: str, env: Mapping[str, str] | None = None) -> tuple[list[object], set[str]]:
    """Run ``body`` (which fills ``results`` with ``run(*argv)``: exit status,
    stdout and stderr) after ``from eventpipe.cli.main import main``; the results and the
    modules loaded.  The environment's ``EVENTPIPE_*`` variables are dropped, then
    ``env`` is added."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    proc = subprocess.run(
        [sys.executable, "-c", HEAD + textwrap.dedent(body) + TAIL],
        capture_output=True,
        text=True,
        timeout=120,
        env={**environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc["results"], set(doc["modules"])


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The ``modules`` that are one of ``packages`` or inside one."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))
