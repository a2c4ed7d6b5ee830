"""The web console at ``/console/``: server-rendered pages (Jinja2, autoescaped) over
the same operations as the CLI and the admin API, with a little JavaScript for
live bits.  Roof level: it imports features (dlq, schema_registry); no feature
imports it.  The service installs it with :func:`install`."""

from __future__ import annotations

from eventpipe.console.site import ROUTES, install

__all__ = ["ROUTES", "install"]
