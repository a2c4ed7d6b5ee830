"""`sources:` entries of type webhook and kafka, checked at config load."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventpipe.errors import ConfigError
from eventpipe.service.config import load_config

GOOD = """
topics:
  - name: billing.events
sources:
  - type: webhook
    name: billing
    topic: billing.events
    verify:
      scheme: standard-webhooks
      secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]
    event:
      type: .body.type
      subject: .body.data.customer
    validate: {schema: {type: object, required: [type]}}
    spool: postgres
    rate_limit: {per_second: 100}
  - type: webhook
    name: gh
    topic: billing.events
    verify: {scheme: github, secrets: [s1, s2]}
  - type: kafka
    name: legacy
    topic: billing.events
    read: {topics: [legacy.orders]}
    format: avro
    event:
      id: header:event-id
      type: '"legacy." + .value.kind'
"""


def load(tmp_path: Path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return load_config(p, environ={})


def test_a_full_config_loads(tmp_path: Path):
    s = load(tmp_path, GOOD)
    assert [(e.type, e.name) for e in s.sources] == [
        ("webhook", "billing"),
        ("webhook", "gh"),
        ("kafka", "legacy"),
    ]


def problems(tmp_path: Path, text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return dict(info.value.problems)


def test_every_problem_reported_with_its_path(tmp_path: Path):
    found = problems(
        tmp_path,
        """
sources:
  - type: webhook
    name: "has space"
    topic: ok
    verify: {scheme: none}
  - type: webhook
    name: b
    topic: "bad topic!"
    verify: {scheme: hmac, secrets: [x], algorithm: md5}
    spool: disk
  - type: webhook
    name: c
    topic: t
  - type: kafka
    name: k
    topic: t
    read: {topics: []}
    event: {id: uuid}
  - type: kafka
    name: k2
    topic: t
    read: {topics: [x]}
    event: {type: ".value |||"}
""",
    )
    assert "sources[0].name" in found
    assert "sources[1].topic" in found
    assert "sources[1].verify.hmac.algorithm" in found
    assert "sources[1].spool" in found
    assert "sources[2].verify" in found  # verification must be chosen explicitly
    assert "sources[3].read.topics" in found
    assert "sources[3].event.id" in found
    assert "type: not a valid jq program" in found["sources[4].event"]


def test_secret_values_never_in_config_errors(tmp_path: Path):
    secret = "whsec_!!not-base64-but-a-real-looking-secret!!"
    with pytest.raises(ConfigError) as info:
        load(
            tmp_path,
            f"""
sources:
  - type: webhook
    name: a
    topic: t
    verify: {{scheme: standard-webhooks, secrets: ["{secret}"]}}
""",
        )
    assert secret not in str(info.value)
    assert "secrets[0]" in str(info.value)


def test_unknown_keys_are_errors(tmp_path: Path):
    found = problems(
        tmp_path,
        """
sources:
  - type: webhook
    name: a
    topic: t
    verify: {scheme: github, secrets: [x]}
    tolerence_s: 3
""",
    )
    assert found["sources[0].tolerence_s"].startswith(
        "unknown key (allowed: type, name, topic, verify,"
    )


def test_entries_need_a_known_type_and_a_unique_name(tmp_path: Path):
    found = problems(
        tmp_path,
        """
sources:
  - name: untyped
    topic: t
  - type: ftp
    name: f
  - type: webhook
    topic: t
    verify: {scheme: none}
  - type: webhook
    name: twice
    topic: t
    verify: {scheme: none}
  - type: kafka
    name: twice
    topic: t
    read: {topics: [x]}
""",
    )
    assert found["sources[0].type"] == "required: the kind of source"
    assert found["sources[1].type"] == (
        "unknown source type 'ftp' (known: kafka, outbox, postgres_cdc, webhook)"
    )
    assert found["sources[2].name"] == "required: a unique name for this source"
    assert "'twice' is used twice" in found["sources[4].name"]
    assert "sources[3].name" not in found
