"""The transactional outbox (ARCHITECTURE.md section 5).

An application writes its rows and its outgoing events in one transaction
(:func:`api.publish`); the relay (``sources: [{type: outbox, ...}]``) publishes the
outbox rows in commit order and deletes or marks them once the broker
acknowledged.  Table columns follow Debezium's outbox event router: id,
aggregatetype, aggregateid, type, payload, headers, created_at.
"""
