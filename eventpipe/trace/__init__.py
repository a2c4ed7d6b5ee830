"""The event trace: where each event landed and what each pipeline did with it.

Producers and pipelines call a :class:`eventpipe.trace_hook.TraceHook` (a core
contract, so they import nothing from here); ``writer`` is the service's, keeping
what it is told in PostgreSQL (migration 0017); ``lookup`` answers ``eventpipe
trace EVENT_ID`` (``cli``) and ``GET /v1/trace/{event_id}`` (``api``).
"""

DEFAULT_SINCE = "24h"  # how far back `eventpipe trace` and /v1/trace look by default
