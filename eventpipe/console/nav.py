"""The console's sections, in the order of its navigation bar and its front page.
A section is a page under ``/console/<path>``; the overview and the pipeline and
trace pages take their places here as they come."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Section:
    path: str  # under /console/
    label: str
    summary: str


SECTIONS: list[Section] = [
    Section(
        "dlq",
        "Dead letters",
        "Records that failed, by pipeline, stage, error and time: payload, headers and "
        "error; patch with jq, preview, replay or discard, and each record's history.",
    ),
    Section(
        "trace",
        "Trace",
        "What happened to an event: where it came in, every record that holds it, what "
        "each pipeline did with it (delivered, filtered, dead-lettered), replays.",
    ),
    Section(
        "schemas",
        "Schemas",
        "The schema registry: subjects, versions, a diff of two versions, and a "
        "compatibility check of a schema you paste.",
    ),
    Section(
        "activity",
        "Activity",
        "Who did what in the console, why and when: replays, discards, logins.",
    ),
]
