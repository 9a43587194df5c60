"""pytest plugin for janusnet (registered through the ``pytest11`` entry point).

Fixtures are added in :mod:`janusnet.testing.fixtures`; this module imports nothing heavy.
"""

from __future__ import annotations
