"""Pipeline sinks: ``postgres``, ``http``, ``topic`` and ``outbox``.

Each module holds one sink: its typed config, its class and its registration
under the name a pipeline's ``sinks:`` list uses.  :mod:`.api` holds what they
share: the delivery item (outputs of one consumed record, with where it was
read), the error classes that tell "the destination is down" from "this record
failed", and the circuit breaker.
"""

from eventpipe.sink import DeliveryItem, PipelineSink, SinkUnavailableError

__all__ = ["DeliveryItem", "PipelineSink", "SinkUnavailableError"]
