"""Subject naming strategies: which subject a topic's key or value schema lives under.

- TopicNameStrategy (default): ``<topic>-key`` / ``<topic>-value``;
- RecordNameStrategy: the record's full name (Avro ``namespace.name``, JSON Schema
  ``title``), so one subject spans topics;
- TopicRecordNameStrategy: ``<topic>-<record full name>``.
"""

from __future__ import annotations

from collections.abc import Callable

from eventpipe.errors import ConfigError, PermanentError

SubjectNameStrategy = Callable[[str, bool, str | None], str]


class SubjectNameError(PermanentError):
    """The strategy needs a record name the schema does not give."""


def topic_name_strategy(topic: str, is_key: bool, record_name: str | None = None) -> str:
    return f"{topic}-{'key' if is_key else 'value'}"


def _record(record_name: str | None, strategy: str) -> str:
    if not record_name:
        raise SubjectNameError(
            f"{strategy} needs a named schema: an Avro record, enum or fixed, or a JSON "
            "Schema with a 'title'"
        )
    return record_name


def record_name_strategy(topic: str, is_key: bool, record_name: str | None = None) -> str:
    return _record(record_name, "RecordNameStrategy")


def topic_record_name_strategy(topic: str, is_key: bool, record_name: str | None = None) -> str:
    return f"{topic}-{_record(record_name, 'TopicRecordNameStrategy')}"


STRATEGIES: dict[str, SubjectNameStrategy] = {
    "TopicNameStrategy": topic_name_strategy,
    "RecordNameStrategy": record_name_strategy,
    "TopicRecordNameStrategy": topic_record_name_strategy,
}
_ALIASES = {
    "topic": "TopicNameStrategy",
    "record": "RecordNameStrategy",
    "topic_record": "TopicRecordNameStrategy",
    "topicrecord": "TopicRecordNameStrategy",
}


def strategy(name: str) -> SubjectNameStrategy:
    """By name: ``TopicNameStrategy`` (or ``topic``), ``RecordNameStrategy``
    (``record``), ``TopicRecordNameStrategy`` (``topic_record``); Java class names
    such as ``io.confluent.kafka.serializers.subject.TopicNameStrategy`` work too."""
    short = name.rpartition(".")[2]
    for candidate in (short, _ALIASES.get(short.lower(), "")):
        for known, fn in STRATEGIES.items():
            if candidate.lower() == known.lower():
                return fn
    raise ConfigError(
        [
            (
                "subject_name_strategy",
                f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}",
            )
        ]
    )
