"""The conformance suite's profiles: what each source and sink plugin supplies so
that the generic cases (tests/integration/test_conformance_sinks.py and
test_conformance_sources.py) run against it (docs/architecture.md)."""
