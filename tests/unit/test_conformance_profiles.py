"""The conformance suite covers every plugin: each source and sink of the catalog,
and the "write your own sink" example, has a profile (tests/conformance/profiles.py),
and a plugin without one becomes a case that fails (the suite itself runs in
tests/integration/test_conformance_sinks.py and test_conformance_sources.py)."""

from __future__ import annotations

from typing import Any

from eventpipe.plugin import Plugin
from eventpipe.service import catalog
from tests.conformance import profiles
from tests.plugins import example_sink


def test_every_catalog_plugin_has_a_profile() -> None:
    lacking = [
        profiles.missing(p.kind, p.type)
        for p, listed in [(s, profiles.SINK_PROFILES) for s in catalog.SINKS]
        + [(s, profiles.SOURCE_PROFILES) for s in catalog.SOURCES]
        if p.type not in listed
    ]
    assert lacking == [], "\n".join(lacking)


def test_the_suite_runs_the_catalog_and_the_example_sink() -> None:
    assert (*catalog.SINKS, example_sink.PLUGIN) == profiles.SINK_PLUGINS
    assert catalog.SOURCES == profiles.SOURCE_PLUGINS
    assert profiles.CATALOG.sinks["audit_rows"] is example_sink.PLUGIN


def test_profiles_serve_the_plugin_they_are_listed_under() -> None:
    for listed in (profiles.SINK_PROFILES, profiles.SOURCE_PROFILES):
        for plugin_type, found in listed.items():
            assert found and {p.plugin_type for p in found} == {plugin_type}
            ids = [p.case_id() for p in found]
            assert len(set(ids)) == len(ids), ids
    assert set(profiles.SINK_PROFILES) == {p.type for p in profiles.SINK_PLUGINS}
    assert set(profiles.SOURCE_PROFILES) == {p.type for p in profiles.SOURCE_PLUGINS}


def test_a_plugin_without_a_profile_is_a_case_that_fails() -> None:
    ftp: Plugin[Any, Any, Any] = Plugin(
        "source", "ftp", example_sink.AuditRowsConfig, lambda c, n, x: None, "files"
    )
    [case] = profiles.cases((ftp,), profiles.SOURCE_PROFILES)
    assert case.values == ((ftp, None),) and case.id == "ftp"
    assert "tests/conformance/source_profiles.py" in profiles.missing("source", "ftp")
