"""
The disk cache: index pages (fresh, revalidated or stale) and their renderings,
package files and their downloads, the router that picks the index answering for
a project, and the housekeeping that keeps the disk budget. The single source of
truth that survives restarts.
"""

from pypicached.cache.fetch import NotFound
from pypicached.cache.files import FileCache
from pypicached.cache.forms import Form, Rendering, form
from pypicached.cache.freshness import Freshness, Offline
from pypicached.cache.growing import DownloadFailed, GrowingFile
from pypicached.cache.housekeeping import Budget, Housekeeper
from pypicached.cache.outcome import HEADER, INDEX_HEADER, CacheStatus
from pypicached.cache.pagekind import INDEX, JSON_API, PROJECT, PageKey, PageKind
from pypicached.cache.pages import PageCache, PageResult
from pypicached.cache.records import StoredPage
from pypicached.cache.router import Linked, Router, Source

__all__ = [
    "HEADER",
    "INDEX",
    "INDEX_HEADER",
    "JSON_API",
    "PROJECT",
    "Budget",
    "CacheStatus",
    "DownloadFailed",
    "FileCache",
    "Form",
    "Freshness",
    "GrowingFile",
    "Housekeeper",
    "Linked",
    "NotFound",
    "Offline",
    "PageCache",
    "PageKey",
    "PageKind",
    "PageResult",
    "Rendering",
    "Router",
    "Source",
    "StoredPage",
    "form",
]
