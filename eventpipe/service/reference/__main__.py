"""``python -m eventpipe.service.reference > docs/reference.md`` (``make docs``)."""

import sys

from eventpipe.service.reference import render

sys.stdout.write(render())
