"""What every ``tokenprune`` subcommand parses and reports the same way: options, strategies, errors.

Shared by `tokenprune.tools.cli` and the subcommands registered from other modules
(`tokenprune.tools.vqa.commands`), so each flag reads and fails alike everywhere.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..registry import get_registry

__all__ = [
    "CliError", "parse_option", "at_least", "add_strategy_arguments", "build_strategy", "validation_message",
    "write_json",
]  # fmt: skip


class CliError(Exception):
    """A user error whose message is ready to print (exit status 2)."""


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as JSON when it parses (``[2,4,6]``, ``0.3``, ``true``), else a string.

    JSON keeps lists and numbers typed without a per-strategy parser; bare words such as
    ``positions=compact`` stay strings, so users need no quoting for the common cases.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value (e.g. ratio=0.3 or layer_list=[2,4,6]), got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (a clear usage error instead of a torch traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def add_strategy_arguments(parser: argparse.ArgumentParser) -> None:
    """``--strategy NAME`` and repeatable ``--option KEY=VALUE``, as every strategy-running subcommand takes them."""
    parser.add_argument("--strategy", default="pyramiddrop", help="registered name or alias (default: pyramiddrop)")
    parser.add_argument(
        "--option", action="append", type=parse_option, metavar="KEY=VALUE",
        help="strategy option, value read as JSON when possible (repeatable), e.g. ratio=0.3 or layer_list=[2]",
    )  # fmt: skip


def build_strategy(strategy: str, options: dict[str, Any]) -> Any:
    """``get_registry().build(strategy, **options)``, with invalid options as one `CliError` paragraph."""
    from pydantic import ValidationError

    try:
        return get_registry().build(strategy, **options)
    except ValidationError as exc:
        raise CliError(validation_message(exc, strategy)) from None


def validation_message(exc: Any, strategy: str) -> str:
    """One paragraph from a pydantic ValidationError: each bad option, why, and the valid names."""
    problems = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ").rstrip(".")
        loc = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{loc}={json.dumps(err['input'], default=str)}: {msg}" if loc else msg)
    spec = get_registry().strategy(strategy)
    valid = ", ".join(spec.config_cls.model_fields)
    return f"Invalid options for strategy {spec.name!r}: {'; '.join(problems)}. Valid options: {valid}."


def write_json(path: str, data: dict[str, Any], indent: int = 2) -> None:
    """Write ``data`` as JSON to ``path`` (parent folders created); a failure is a `CliError` naming the path."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=indent) + "\n")
    except OSError as exc:
        raise CliError(f"Could not write the JSON report to {path}: {exc.strerror or exc}.") from None
