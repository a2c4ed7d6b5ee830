"""CloudEvents: the event model and its Kafka and HTTP bindings."""

from eventpipe.envelope.event import (
    CloudEvent,
    format_time,
    is_json_content_type,
    new_id,
    parse_time,
)
from eventpipe.envelope.http import BATCH_CT, STRUCTURED_CT, from_http, to_http, to_http_batch
from eventpipe.envelope.json import (
    decode_batch,
    decode_structured,
    encode_batch,
    encode_structured,
    from_structured_dict,
    to_structured_dict,
)
from eventpipe.envelope.kafka import KafkaMessage, from_kafka, to_kafka

__all__ = [
    "BATCH_CT",
    "STRUCTURED_CT",
    "CloudEvent",
    "KafkaMessage",
    "decode_batch",
    "decode_structured",
    "encode_batch",
    "encode_structured",
    "format_time",
    "from_http",
    "from_kafka",
    "from_structured_dict",
    "is_json_content_type",
    "new_id",
    "parse_time",
    "to_http",
    "to_http_batch",
    "to_kafka",
    "to_structured_dict",
]
