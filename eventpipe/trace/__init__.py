"""The event trace: where each event landed and what each pipeline did with it.

``hook`` is what producers and pipelines call; ``writer`` keeps it in PostgreSQL
(migration 0017); ``lookup`` answers ``eventpipe trace EVENT_ID`` and
``GET /v1/trace/{event_id}``.
"""
