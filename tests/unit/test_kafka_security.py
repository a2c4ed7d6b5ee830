"""Every Kafka client, the pipelines' faust apps included, gets the security
settings (TLS, SASL) from one function: ``eventpipe.kafka.client.client_kwargs``."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from eventpipe.context import Context
from eventpipe.errors import ConfigError
from eventpipe.kafka.client import client_kwargs
from eventpipe.pipelines.runtime import PipelineRuntime
from eventpipe.pipelines.spec import PipelineSpec
from eventpipe.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
# Everything shipped lives under eventpipe/.
SHIPPED = ["eventpipe"]
SECURITY_KEYS = (
    "security_protocol",
    "ssl_context",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
)

CASES: list[dict[str, Any]] = [
    {"security_protocol": "SSL"},
    {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "svc",
        "sasl_password": "pw",
    },
    {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "svc",
        "sasl_password": "pw",
        "ssl_check_hostname": False,
    },
]


def _settings(kafka: dict[str, Any]) -> Settings:
    return load_settings(environ={}, overrides={"kafka": {"bootstrap": "k1:9093,k2:9093", **kafka}})


def _security(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw[k] for k in SECURITY_KEYS if kw.get(k) is not None}


@pytest.mark.parametrize("kafka", CASES, ids=lambda c: c["security_protocol"])
def test_pipeline_faust_app_gets_the_security_settings(kafka: dict[str, Any]) -> None:
    settings = _settings(kafka)
    spec = PipelineSpec.model_validate(
        {"name": "p", "source": {"topics": ["in"]}, "sinks": [{"topic": {"topic": "out"}}]}
    )
    rt = PipelineRuntime(spec, Context(settings, None, None), data_dir=Path("/tmp"))  # type: ignore[arg-type]
    app = rt._faust_app()
    conf = app.conf
    faust_auth = dict(credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))
    ours = _security(client_kwargs(settings.kafka))
    assert ours["security_protocol"] == kafka["security_protocol"]
    assert _security(faust_auth) == ours
    assert [str(u) for u in conf.broker] == ["kafka://k1:9093", "kafka://k2:9093"]
    if "ssl_context" in ours:
        assert ours["ssl_context"].check_hostname is kafka.get("ssl_check_hostname", True)


@pytest.mark.parametrize("kafka", CASES, ids=lambda c: c["security_protocol"])
async def test_aiokafka_clients_accept_the_kwargs(kafka: dict[str, Any]) -> None:
    # aiokafka refuses SSL / SASL_SSL without an ssl_context: the kwargs must carry one.
    client = AIOKafkaClient(**client_kwargs(_settings(kafka).kafka))
    await client.close()


def test_sasl_without_credentials_is_a_load_error() -> None:
    with pytest.raises(ConfigError) as ei:
        _settings({"security_protocol": "SASL_SSL"})
    paths = {p for p, _ in ei.value.problems}
    assert {"kafka.sasl_mechanism", "kafka.sasl_username", "kafka.sasl_password"} <= paths


CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient", "App"}
KWARG_FUNCTIONS = {"client_kwargs", "producer_kwargs", "faust_app_kwargs"}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def test_every_kafka_client_is_built_through_client_kwargs() -> None:
    """No client is built from a bootstrap alone: each constructor call in the
    shipped packages spreads ``**client_kwargs(...)`` (or a function built on it)."""
    offenders, seen = [], 0
    for folder in SHIPPED:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or _name(node.func) not in CLIENTS:
                    continue
                if _name(node.func) == "App" and not (
                    isinstance(node.func, ast.Attribute) and _name(node.func.value) == "faust"
                ):
                    continue
                seen += 1
                spread = [
                    k.value
                    for k in node.keywords
                    if k.arg is None
                    and isinstance(k.value, ast.Call)
                    and _name(k.value.func) in KWARG_FUNCTIONS
                ]
                direct = {k.arg for k in node.keywords} & {"bootstrap_servers", "broker"}
                if not spread or direct:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert seen >= 8  # the scan finds the clients at all
    assert not offenders, offenders
