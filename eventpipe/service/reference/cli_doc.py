"""The command line part of the reference, walked from ``eventpipe``'s parser: every
command and group with its description, and every flag with its help."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from eventpipe.cli.main import build_parser

from .markdown import Doc, heading, table


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """(command path, its parser, its one-line help in the parent's listing)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name)
                yield from commands(sub, (*path, name))


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    return [
        name
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
        for name in a.choices
    ]


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" not in text:
        return text
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    return text % params


def _flag(action: argparse.Action) -> tuple[str, str]:
    """(the flag as typed, its value)."""
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`", "(positional)"
    flags = ", ".join(f"`{s}`" for s in sorted(action.option_strings, key=len, reverse=True))
    if action.nargs == 0:
        return flags, ""
    if action.choices is not None:
        return flags, "one of " + ", ".join(f"`{c}`" for c in action.choices)
    return flags, f"`{action.metavar or action.dest.upper()}`"


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    value = action.default
    if value in (None, False, [], argparse.SUPPRESS) or action.nargs == 0:
        return ""
    return f"`{value}`"


def _synopsis(path: tuple[str, ...], parser: argparse.ArgumentParser) -> str:
    words = ["eventpipe", *path]
    subs = _subcommands(parser)
    if subs:
        words.append("{" + ",".join(subs) + "}")
    else:
        words.append("[flags]")
        for a in parser._actions:
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
                name = a.metavar or a.dest.upper()
                words.append(f"[{name}]" if a.nargs in ("?", "*") else str(name))
    return "`" + " ".join(str(w) for w in words) + "`"


CLI_INTRO = (
    "Every command prints this with `--help`. A flag wins over its `EVENTPIPE_*` "
    "variable, which wins over the config file (`-c FILE`). `eventpipe --version` "
    "prints the version."
)


def cli_reference(doc: Doc) -> None:
    root = build_parser()
    listed = [f"[`{' '.join(p)}`](#cli-{'-'.join(p)})" for p, _s, _h in commands(root)]
    doc.add("Commands: " + ", ".join(listed) + ".")
    for path, parser, one_line in commands(root):
        name = " ".join(path)
        if not one_line:
            doc.undocumented.append(f"command {name}: no help line")
        doc.add(heading(3, f"`eventpipe {name}`", "cli-" + "-".join(path)))
        doc.add(parser.description or one_line or "", _synopsis(path, parser))
        rows = []
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            flag, value = _flag(action)
            text = _help(action, parser.prog)
            if not text:
                doc.undocumented.append(f"command {name}: {flag.strip('`')} has no help")
            rows.append((flag, value, _default(action), text))
        if rows:
            doc.add(table(("flag", "value", "default", "description"), rows))


__all__ = ["CLI_INTRO", "cli_reference", "commands"]
