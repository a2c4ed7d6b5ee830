"""eventpipe.kafka.client.start_client: every client eventpipe starts (producer,
consumers, admin) fails the same way when the broker cannot be reached -- our
retriable BrokerUnavailableError naming the address and where it is set, the
client closed -- instead of each caller's own copy (or, for `eventpipe tail` and
the dead-letter reader, aiokafka's own error)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from eventpipe.embedded.process import free_port
from eventpipe.errors import BrokerUnavailableError, is_retriable
from eventpipe.kafka.client import client_kwargs, producer_kwargs, start_client
from eventpipe.settings import KafkaSettings


def _client(which: str, kafka: KafkaSettings) -> Any:
    if which == "producer":
        return AIOKafkaProducer(**producer_kwargs(kafka))
    if which == "consumer":
        return AIOKafkaConsumer(group_id=None, **client_kwargs(kafka))
    return AIOKafkaAdminClient(**client_kwargs(kafka))


@pytest.mark.parametrize("which", ["producer", "consumer", "admin"])
async def test_an_unreachable_broker_is_a_clear_retriable_error(which: str) -> None:
    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")  # nothing listens
    client = _client(which, kafka)
    with pytest.raises(BrokerUnavailableError) as info:
        await start_client(client, kafka, "read the orders")
    msg = str(info.value)
    assert f"cannot reach the Kafka broker at {kafka.bootstrap} to read the orders" in msg
    assert "check kafka.bootstrap / EVENTPIPE_KAFKA_BOOTSTRAP" in msg
    assert is_retriable(info.value)


async def test_the_hint_names_the_flag_a_command_takes() -> None:
    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")
    consumer = AIOKafkaConsumer(group_id=None, **client_kwargs(kafka))
    with pytest.raises(BrokerUnavailableError, match=r"check kafka.bootstrap / --bootstrap$"):
        await start_client(consumer, kafka, "trace", hint="kafka.bootstrap / --bootstrap")
