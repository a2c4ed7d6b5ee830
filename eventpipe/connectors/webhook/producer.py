"""The webhook sources' producer: records of concurrent requests join each
partition's open batch (:mod:`eventpipe.kafka.open_batches`, where the reasons
are).  :meth:`BatchProducer.send` returns only after the broker acknowledged
(acks from ``kafka.acks``), or raises ``BrokerUnavailableError`` (retriable, also
when no acknowledgement came within ``timeout_s``), ``RecordTooLargeError``
(before anything of the call was produced) or ``PermanentError``; a call whose
acknowledgement came too late runs its ``on_late_ack`` when every batch of it is
acknowledged after all (the webhook records the delivery ids then).  Each webhook
source has its own: nothing else appends to its batches.  Each acknowledged
batch's event ids go to the trace index (``trace``, via ``webhook``); with
tracing on, each record batch is one ``send`` span linked to its requests.
"""

from __future__ import annotations

from eventpipe.kafka.open_batches import OpenBatchProducer
from eventpipe.settings import KafkaSettings


class BatchProducer(OpenBatchProducer):
    def __init__(self, kafka: KafkaSettings, *, timeout_s: float = 10.0) -> None:
        super().__init__(
            kafka, timeout_s=timeout_s, name="webhook producer", via="webhook", batch_spans=True
        )
