"""The console's sections, in the order of its navigation bar.  A section is a
page under ``/console/<path>``; the overview is the front page (``path`` empty)
and holds the pipeline pages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Section:
    path: str  # under /console/
    label: str
    summary: str
    holds: tuple[str, ...] = ()  # other paths under /console/ that belong to it

    def is_active(self, request_path: str) -> bool:
        """Whether the page at ``request_path`` belongs to this section."""
        page = request_path.split("?", 1)[0].removeprefix("/console/")
        if not self.path:
            return page == "" or page.startswith(self.holds)
        return page.startswith(self.path)


SECTIONS: list[Section] = [
    Section(
        "",
        "Overview",
        "Every source, pipeline and sink: state, events/s, lag, dead letters and the "
        "last error, with the last hour as charts; a page per pipeline.",
        holds=("pipelines/",),
    ),
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
