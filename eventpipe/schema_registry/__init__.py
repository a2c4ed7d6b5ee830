"""eventpipe.schema_registry: a Confluent-compatible schema registry stored in
PostgreSQL, and a client for any such registry.

- ``server``: the REST API (``install(app, ctx)`` mounts it at ``/schema-registry/``;
  ``build_registry_app(pool)`` serves it alone); ``registry`` its operations,
  ``store`` the SQL (migration ``0002_schema_registry``);
- ``schemas``: parsing AVRO (fastavro) and JSON Schema (jsonschema-rs), stored text,
  fingerprints, references; ``compat`` the levels, ``avro_compat`` / ``json_compat``
  the rules;
- ``client``: ``SchemaRegistryClient`` (async, cached); ``wire`` Confluent's wire
  format; ``serde`` ``Serializer`` / ``Deserializer``; ``naming`` subject strategies;
- ``cli``: ``eventpipe schemas ...`` and ``eventpipe schema-registry serve``.
"""
