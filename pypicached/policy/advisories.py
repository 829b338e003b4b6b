"""Placeholder with the interface of the advisory feed (being written on its own branch): no advisories."""
import attrs
@attrs.frozen
class Advisory:
    id: str
    malicious: bool
    summary: str = ""
class AdvisoryIndex:
    def __init__(self, table=None, version=""):
        self._table = table or {}
        self.version = version
        self.count = len(self._table)
    def affecting(self, project, version):
        return tuple(self._table.get((project, version), ()))
EMPTY = AdvisoryIndex()
class AdvisoryFeed:
    current = EMPTY
