"""The command line is consistent: the tree under ``eventpipe`` is walked, so a new
command is checked as soon as it is registered (and must be listed in REACHES).

- every command and group has a one-line help (the parent's listing) and a
  description (its own ``--help``);
- a command that reads the database takes ``--database-url`` and ``-c``, one that
  talks to Kafka ``--bootstrap``, one that talks to a schema registry
  ``--registry``, each with the same help text; no command takes a flag it
  would ignore;
- and the flag is really used, with one precedence everywhere: flag, then the
  environment variable, then the config file.  The command itself is run up to
  the point where it validates its settings (or opens its registry client), and
  what it would use is captured there.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventpipe.cli import common
from eventpipe.cli.main import build_parser
from eventpipe.settings import Settings

# Each command -> what it reaches, and the arguments it needs to get that far.
REACHES: dict[str, tuple[set[str], list[str]]] = {
    "dev": ({"database", "kafka"}, []),
    "run": ({"database", "kafka"}, []),
    "check": ({"database", "kafka"}, []),
    "status": (set(), []),  # a running service, over HTTP (--url, or the config's host/port)
    "migrate": ({"database"}, []),
    "publish": ({"kafka"}, ["--topic", "t", "--data", "1", "--type", "x", "--source", "/s"]),
    "tail": ({"kafka"}, ["--topic", "t"]),
    "schemas register": ({"registry"}, ["subject", "SCHEMA"]),
    "schemas list": ({"registry"}, []),
    "schemas show": ({"registry"}, ["--id", "1"]),
    "schemas check": ({"registry"}, ["subject", "SCHEMA"]),
    "schemas delete": ({"registry"}, ["subject"]),
    "schema-registry serve": ({"database"}, []),
    "cdc status": ({"database"}, []),
    "cdc snapshot": ({"database"}, ["--table", "public.t", "--slot", "s"]),
    "cdc drop-slot": ({"database"}, ["s", "--yes"]),
    "dlq list": ({"database", "kafka"}, []),
    "dlq show": ({"database", "kafka"}, ["t:0:1"]),
    "dlq stats": ({"database", "kafka"}, []),
    "dlq replay": ({"database", "kafka"}, []),
    "dlq discard": ({"database", "kafka"}, ["--reason", "r"]),
    "backfill": ({"database", "kafka"}, ["--pipeline", "p", "--from", "2d", "--to", "1d"]),
    "trace": ({"database", "kafka"}, ["evt-1"]),
}
FLAGS = {"database": "--database-url", "kafka": "--bootstrap", "registry": "--registry"}


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser, str | None, bool]]:
    """(command path, its parser, its help in the parent's listing, whether it is a leaf)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                sub_path = (*path, name)
                leaf = not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                yield " ".join(sub_path), sub, helps.get(name), leaf
                yield from commands(sub, sub_path)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


TREE = list(commands(build_parser()))
LEAVES = {name: parser for name, parser, _help, leaf in TREE if leaf}


def test_every_command_is_listed_here() -> None:
    assert set(LEAVES) == set(REACHES), "list a new command in REACHES: what does it reach?"


@pytest.mark.parametrize(("name", "parser", "help_", "_leaf"), TREE, ids=[t[0] for t in TREE])
def test_every_command_has_a_one_line_help_and_a_description(
    name: str, parser: argparse.ArgumentParser, help_: str | None, _leaf: bool
) -> None:
    assert help_ and "\n" not in help_, f"`eventpipe {name}` has no help in its parent's list"
    assert parser.description, f"`eventpipe {name} --help` shows no description"


@pytest.mark.parametrize("name", sorted(REACHES))
def test_each_command_takes_the_flags_of_what_it_reaches_and_no_other(name: str) -> None:
    reaches, _argv = REACHES[name]
    opts = options(LEAVES[name])
    for system, flag in FLAGS.items():
        if system in reaches:
            assert flag in opts, f"`eventpipe {name}` reaches the {system} but has no {flag}"
            assert opts[flag].help == common.SHARED_HELP[flag]
        else:
            assert flag not in opts, f"`eventpipe {name}` never reaches the {system}: {flag}"
    assert "-c" in opts and opts["-c"].dest == "config"


# ------------------------------------------------- the flags are used, in order
class Reached(BaseException):
    """Raised where a command validates its settings or opens a registry client."""


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    seen: dict[str, Any] = {}

    def validate(raw: Any, *args: Any, **kwargs: Any) -> Settings:
        seen["settings"] = raw
        raise Reached

    class Client:
        def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:
            seen["registry"] = url
            raise Reached

    from eventpipe.schema_registry import cli as schema_cli
    from eventpipe.schema_registry import client

    monkeypatch.setattr(Settings, "model_validate", validate)
    monkeypatch.setattr(client, "SchemaRegistryClient", Client)  # imported by the command
    for var in ("EVENTPIPE_DATABASE_URL", "EVENTPIPE_KAFKA_BOOTSTRAP", schema_cli.URL_ENV):
        monkeypatch.delenv(var, raising=False)
    levels = {n: logging.getLogger(n).level for n in ("aiokafka", "kafka", "psycopg.pool")}
    yield seen
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


def run_until_reached(name: str, extra: list[str], cfg: Path, tmp_path: Path) -> None:
    _reaches, argv = REACHES[name]
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object"}')
    argv = [str(schema) if a == "SCHEMA" else a for a in argv]
    args = build_parser().parse_args([*name.split(), *argv, "-c", str(cfg), *extra])
    with pytest.raises(Reached):
        args.func(args)


FILE = {
    "database": ("database", "url", "postgresql://file/db"),
    "kafka": ("kafka", "bootstrap", "file:9092"),
}
ENV = {"database": "EVENTPIPE_DATABASE_URL", "kafka": "EVENTPIPE_KAFKA_BOOTSTRAP"}
CASES = [
    (name, system)
    for name, (reaches, _argv) in sorted(REACHES.items())
    for system in ("database", "kafka")
    if system in reaches
]


@pytest.mark.parametrize(("name", "system"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_flag_over_environment_over_file(
    name: str,
    system: str,
    captured: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    section, key, in_file = FILE[system]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{section}:\n  {key}: {in_file}\n")

    def used(extra: list[str]) -> Any:
        run_until_reached(name, extra, cfg, tmp_path)
        return captured["settings"][section][key]

    assert used([]) == in_file
    monkeypatch.setenv(ENV[system], "from-env")
    assert used([]) == "from-env"
    assert used([FLAGS[system], "from-flag"]) == "from-flag"


REGISTRY_COMMANDS = sorted(n for n, (reaches, _a) in REACHES.items() if "registry" in reaches)


@pytest.mark.parametrize("name", REGISTRY_COMMANDS)
def test_registry_flag_over_environment_over_the_services_own(
    name: str, captured: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventpipe.schema_registry import cli as schema_cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text("service:\n  port: 8181\n")
    # Without flag or variable the service's own registry is used: its settings
    # are loaded (and the capture stops there).
    run_until_reached(name, [], cfg, tmp_path)
    assert captured["settings"]["service"]["port"] == 8181
    monkeypatch.setenv(schema_cli.URL_ENV, "http://env:8081")
    run_until_reached(name, [], cfg, tmp_path)
    assert captured["registry"] == "http://env:8081"
    run_until_reached(name, ["--registry", "http://flag:8081"], cfg, tmp_path)
    assert captured["registry"] == "http://flag:8081"


def test_dev_flags_name_external_services_instead_of_the_embedded_ones() -> None:
    from eventpipe.cli.dev import stack_environ
    from eventpipe.embedded.stack import DATABASE_ENV, KAFKA_ENV

    args = build_parser().parse_args(["dev", "--database-url", "postgresql://x/db"])
    env = stack_environ(args, {KAFKA_ENV: "env:9092"})
    assert env[DATABASE_ENV] == "postgresql://x/db" and env[KAFKA_ENV] == "env:9092"
    args = build_parser().parse_args(["dev", "--bootstrap", "flag:9092"])
    assert stack_environ(args, {KAFKA_ENV: "env:9092"})[KAFKA_ENV] == "flag:9092"
    assert DATABASE_ENV not in stack_environ(args, {})
