"""The web dashboard's built files.

The sources are in the checkout's ``web/`` (Vite, Preact, xterm.js); ``scripts/install``
builds them into ``static/`` here (``npm ci && npm run build`` in ``web/``), with the
Swagger UI and ReDoc assets that ``/docs`` and ``/redoc`` load. ``static/`` is not
committed: :mod:`cove.api.dashboard` serves a page saying how to build it when it is
missing.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
