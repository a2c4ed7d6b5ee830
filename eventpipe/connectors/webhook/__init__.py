"""Webhook ingestion: ``POST /webhooks/{name}`` turns verified provider deliveries
(Standard Webhooks, Stripe, GitHub, a configurable HMAC) into CloudEvents on a
topic, answering 2xx only once the event is stored (broker ack or Postgres spool).

Modules: ``config`` (typed settings), ``verify`` (one verifier per scheme),
``mapping`` + ``paths`` (jq expressions -> attributes), ``schema`` (validation),
``dedup``, ``spool`` (+ relay), ``limits``, ``batching`` (group commit),
``producer`` (batched produce), ``rejects`` (problem answers, dead letters),
``source`` (the request path) and ``routes`` (the route and the name check).
"""
