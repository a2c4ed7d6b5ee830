from __future__ import annotations

from eventpipe.dlq.record import DeadLetter, Origin
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from tests.helpers import read_records


async def test_dead_letter_lands_with_key_value_and_headers(settings: Settings, topic: str) -> None:
    letter = DeadLetter.from_exception(
        ValueError("bad"),
        key=b"key-1",
        value=b"not json",
        headers=[("h", b"v")],
        pipeline="p1",
        stage="decode",
        origin=Origin("src", 0, 5, 1),
    )
    async with Publisher(settings) as pub:
        [ack] = await DeadLetterWriter(pub, topic).write([letter])
    assert ack.topic == topic
    [rec] = await read_records(settings.kafka.bootstrap, topic, 1)
    assert rec.key == b"key-1" and rec.value == b"not json"
    back = DeadLetter.from_kafka(rec.key, rec.value, list(rec.headers))
    assert back.origin.offset == 5 and back.stage == "decode"
    assert back.exception_class == "builtins.ValueError"
    assert back.headers == [("h", b"v")]
