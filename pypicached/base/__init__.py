"""The bottom layer: project names, request paths and disk helpers, used by every layer above."""

from pypicached.base.disk import (
    RunInThread,
    ThreadWork,
    atomic_write,
    commit,
    disk_pool,
    durable_file,
    fsync_dir,
    move_into_place,
    thread_runner,
    write_all,
)
from pypicached.base.inflight import Inflight
from pypicached.base.names import (
    globs,
    is_valid_name,
    is_valid_version,
    matches_any,
    normalize,
    parse_version,
    projects_for_filename,
    version_of,
    without_metadata,
)
from pypicached.base.paths import BadPath, RequestPath, is_plain_segment, under

__all__ = [
    # disk
    "RunInThread",
    "ThreadWork",
    "atomic_write",
    "commit",
    "disk_pool",
    "durable_file",
    "fsync_dir",
    "move_into_place",
    "thread_runner",
    "write_all",
    # inflight
    "Inflight",
    # names
    "globs",
    "is_valid_name",
    "is_valid_version",
    "matches_any",
    "normalize",
    "parse_version",
    "projects_for_filename",
    "version_of",
    "without_metadata",
    # paths
    "BadPath",
    "RequestPath",
    "is_plain_segment",
    "under",
]
