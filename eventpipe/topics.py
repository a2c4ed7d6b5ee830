"""Kafka topic names: one rule, one type.

A topic name is 1-249 characters of letters, digits, ``.``, ``_`` and ``-``, and
neither ``.`` nor ``..`` (Kafka's own rule).  Config models use :data:`TopicName`;
code that meets a name at run time (an HTTP path, a routed event) calls
:func:`is_topic_name` or :func:`check_topic`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
RULE = "1-249 of letters, digits, '.', '_' and '-'; not '.' or '..'"


def is_topic_name(name: str) -> bool:
    return name not in (".", "..") and _TOPIC.match(name) is not None


def check_topic(name: str) -> str:
    """``name`` itself, or ValueError saying the rule."""
    if not is_topic_name(name):
        raise ValueError(f"{name!r} is not a valid Kafka topic name ({RULE})")
    return name


TopicName = Annotated[str, AfterValidator(check_topic)]
"""A ``str`` field that must be a valid topic name (pydantic)."""

__all__ = ["RULE", "TopicName", "check_topic", "is_topic_name"]
