"""A fake package index (PEP 503 / 691 / 658 / 700 and PyPI's JSON API) that misbehaves on demand.

Why: the proxy must be tested against an upstream whose answers, timing and failures the test
controls exactly, without the internet.  Every request is logged so tests can assert what really
reached the upstream (one fetch per file, revalidations, which ``Accept`` was sent) rather than
trusting an installer's exit code.

Two flavours:

``"html"``
    A plain PEP 503 index (think ``python -m http.server`` over a directory tree or a simple
    static mirror): always ``text/html``, relative file links under ``/files/<filename>``, no
    PEP 658 metadata, no JSON API.  Sends an ``ETag`` and ``Last-Modified`` like a static server.
``"json"``
    Behaves like the public index: PEP 691 content negotiation, absolute file URLs under the
    content-addressed ``/packages/…`` layout, PEP 658/714 metadata, PEP 700 keys, unknown keys,
    ``Cache-Control``/``ETag``/``X-PyPI-Last-Serial``/``Vary``, and ``/pypi/<p>/json``.
    ``core_metadata=False`` (or a predicate on the :class:`Dist`) leaves PEP 658 metadata out
    for all (or some) wheels, as for files uploaded before the index extracted it: nothing is
    advertised and ``<file>.metadata`` is a 404, so installers must read the wheel itself
    (HEAD and range requests, or a whole download).

Misbehaviour is configured through :attr:`FakeUpstream.behaviour`, keyed by request path; a value
is an action string, a list of action strings consumed one per request (``None`` = behave), or a
callable ``(RecordedRequest) -> action | None``.  Actions (combine body actions with ``+``):

- ``"status:503"``   answer with that status and a short text body;
- ``"hang"``         never answer (see :attr:`FakeUpstream.pending`, ``release_pending``,
  ``drop_pending``);
- ``"drop"``         abort the connection without any response;
- ``"gate[:N]"``     (alias ``"slow[:N]"``) send headers and the first N body bytes (default:
  half), then hold until :meth:`FakeUpstream.release`; see :meth:`FakeUpstream.gate`;
- ``"truncate[:N]"`` promise the full ``Content-Length``, send N bytes (default: half), close;
- ``"corrupt"``      flip one byte in the middle of the body, same length.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import html
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote, unquote

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IPushProducer
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from .wheels import Dist, normalize_project

__all__ = [
    "Flavour",
    "RecordedRequest",
    "FileEntry",
    "Gate",
    "Pending",
    "FakeUpstream",
    "Listening",
    "start_fake_upstream",
    "upstream_file_counts",
    "JSON_TYPE",
    "HTML_TYPE",
    "PIP_ACCEPT",
    "UV_ACCEPT",
]

Flavour = Literal["html", "json"]
Action = str | None
BehaviourValue = str | list | Callable[["RecordedRequest"], Action]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
_JSON_TYPES = (JSON_TYPE, "application/vnd.pypi.simple.latest+json")
_HTML_TYPES = (HTML_TYPE, "application/vnd.pypi.simple.latest+html")
# What the installers send, for tests that talk to an index directly.
PIP_ACCEPT = f"{JSON_TYPE}, {HTML_TYPE}; q=0.1, text/html; q=0.01"
UV_ACCEPT = f"{JSON_TYPE}, {HTML_TYPE};q=0.2, text/html;q=0.01"  # uv 0.13 writes no spaces

_UPLOAD_EPOCH = datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC)
_CHUNK = 64 * 1024
_FILE_PREFIXES = ("/files/", "/packages/")
_PAGE_PREFIXES = ("/simple", "/pypi/")


# --------------------------------------------------------------------------------------------
# Values


@attrs.frozen
class RecordedRequest:
    """What one request to the fake upstream looked like when it arrived."""

    seq: int
    method: str
    path: str  # percent-decoded, without the query string
    query: str
    accept: str | None
    range: str | None
    if_none_match: str | None
    if_modified_since: str | None
    if_range: str | None
    cache_control: str | None
    accept_encoding: str | None
    user_agent: str | None
    headers: tuple[tuple[str, str], ...] = attrs.field(repr=False)

    def header(self, name: str) -> str | None:
        """First value of a request header, case-insensitively."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def is_file(self) -> bool:
        """A request for a distribution file or its PEP 658 metadata."""
        return self.path.startswith(_FILE_PREFIXES)

    @property
    def is_metadata(self) -> bool:
        return self.is_file and self.path.endswith(".metadata")

    @property
    def is_page(self) -> bool:
        """A request for an index page (simple API or PyPI JSON API)."""
        return self.path.startswith(_PAGE_PREFIXES)

    @property
    def wants_json(self) -> bool:
        return _negotiate(self.accept) == JSON_TYPE


@attrs.frozen
class FileEntry:
    """A published file: the dist plus what the index says about it."""

    dist: Dist
    upload_time: datetime.datetime
    yanked: str | None = None  # None: not yanked; "" yanked without a reason

    @property
    def upload_time_iso(self) -> str:
        return self.upload_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.frozen
class Pending:
    """A request held by the ``"hang"`` action."""

    record: RecordedRequest
    request: Request = attrs.field(repr=False, eq=False)


@attrs.frozen
class _Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    etag: str | None = None
    last_modified: datetime.datetime | None = None
    ranges: bool = False  # honour Range / If-Range (files only)


@attrs.frozen
class _Actions:
    status: int | None = None
    hang: bool = False
    drop: bool = False
    gate_at: int | None = None  # -1: half the body
    cut_at: int | None = None  # -1: half the body
    corrupt: bool = False

    @classmethod
    def parse(cls, spec: Action) -> _Actions:
        if not spec:
            return cls()
        values: dict[str, Any] = {}
        for part in spec.split("+"):
            kind, _, arg = part.strip().partition(":")
            if kind == "status":
                values["status"] = int(arg)
            elif kind == "hang":
                values["hang"] = True
            elif kind == "drop":
                values["drop"] = True
            elif kind in ("gate", "slow"):
                values["gate_at"] = int(arg) if arg else -1
            elif kind == "truncate":
                values["cut_at"] = int(arg) if arg else -1
            elif kind == "corrupt":
                values["corrupt"] = True
            else:
                raise ValueError(f"unknown fake upstream action {part!r} in {spec!r}")
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Gates and body streaming


class Gate:
    """Holds response bodies at a byte offset until the test opens it.

    Why: to have several proxy clients attached to one download that is provably still in
    progress, the test needs the upstream to stop mid-body and wait for it, not a sleep.
    """

    def __init__(self) -> None:
        self.is_open = False
        self.arrived = 0
        self._held: list[Deferred[None]] = []
        self._watchers: list[tuple[int, Deferred[int]]] = []

    @property
    def waiting(self) -> int:
        """How many responses are currently held."""
        return len(self._held)

    def reached(self, count: int = 1) -> Deferred[int]:
        """Fires once ``count`` responses have written their pre-gate bytes (ever, in total)."""
        if self.arrived >= count:
            return succeed(self.arrived)
        d: Deferred[int] = Deferred()
        self._watchers.append((count, d))
        return d

    def open(self) -> None:
        """Let held and future responses through."""
        self.is_open = True
        held, self._held = self._held, []
        for d in held:
            d.callback(None)

    def close(self) -> None:
        """Hold future responses again (those already through stay through)."""
        self.is_open = False

    def _hold(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.is_open:
            d.callback(None)
        else:
            self._held.append(d)
        self.arrived += 1
        ready = [w for w in self._watchers if w[0] <= self.arrived]
        self._watchers = [w for w in self._watchers if w[0] > self.arrived]
        for _, watcher in ready:
            watcher.callback(self.arrived)
        return d


def _gone(request: Request) -> bool:
    return bool(getattr(request, "_disconnected", False)) or request.finished


@implementer(IPushProducer)
class _BodyProducer:
    """Writes a body in chunks, one chunk per reactor turn, honouring pause/gate/cut.

    Why a real producer: a gate must leave the first bytes on the wire (so the proxy sees a
    download in progress) while the rest waits, and flow control must be the transport's.
    """

    def __init__(
        self,
        reactor: Any,
        request: Request,
        body: bytes,
        *,
        gate_at: int | None,
        gate: Gate | None,
        cut_at: int | None,
    ) -> None:
        self._reactor = reactor
        self._request = request
        self._body = body
        self._gate_at = gate_at
        self._gate = gate
        self._cut_at = cut_at
        self._pos = 0
        self._paused = False
        self._stopped = False
        self._waiting = False
        self._call: Any = None

    def start(self) -> None:
        self._request.notifyFinish().addBoth(lambda _: self.stopProducing())
        self._request.registerProducer(self, True)
        self._request.write(b"")  # the status line and headers go out now
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not (self._paused or self._stopped or self._waiting):
            self._call = self._reactor.callLater(0, self._step)

    def _step(self) -> None:
        self._call = None
        if self._paused or self._stopped or self._waiting:
            return
        limit = len(self._body)
        if self._gate_at is not None:
            limit = min(limit, self._gate_at)
        if self._cut_at is not None:
            limit = min(limit, self._cut_at)
        if self._pos < limit:
            end = min(limit, self._pos + _CHUNK)
            chunk = self._body[self._pos : end]
            self._pos = end
            self._request.write(chunk)
            self._schedule()
            return
        if self._gate_at is not None and self._gate is not None:
            self._gate_at = None
            self._waiting = True
            self._gate._hold().addCallback(self._gate_opened)
            return
        if self._cut_at is not None:
            self._stopped = True
            self._request.unregisterProducer()
            self._request.channel.transport.loseConnection()
            return
        self._stopped = True
        self._request.unregisterProducer()
        if not _gone(self._request):
            self._request.finish()

    def _gate_opened(self, _: object) -> None:
        self._waiting = False
        self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


# --------------------------------------------------------------------------------------------
# Helpers


def _negotiate(accept: str | None) -> str:
    """PEP 691 negotiation, simply: JSON if acceptable at all, else the best HTML type."""
    if not accept:
        return "text/html"
    prefs: dict[str, float] = {}
    for part in accept.split(","):
        bits = part.strip().split(";")
        media = bits[0].strip().lower()
        q = 1.0
        for param in bits[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        prefs.setdefault(media, q)
    if any(prefs.get(t, 0.0) > 0 for t in _JSON_TYPES):
        return JSON_TYPE
    v1 = max(prefs.get(t, 0.0) for t in _HTML_TYPES)
    plain = prefs.get("text/html", 0.0)
    if v1 > 0 and v1 >= plain:
        return HTML_TYPE
    return "text/html"


def _strong_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:40] + '"'


def _etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison, as If-None-Match requires."""
    if not header:
        return False
    if header.strip() == "*":
        return True

    def opaque(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    return any(opaque(tag) == opaque(etag) for tag in header.split(","))


def _http_date(when: datetime.datetime) -> str:
    return format_datetime(when.astimezone(datetime.UTC).replace(microsecond=0), usegmt=True)


def _parse_range(spec: str, size: int) -> tuple[int, int] | None | Literal["unsatisfiable"]:
    """One ``bytes=`` range as (first, last) inclusive; None to ignore the header."""
    unit, _, ranges = spec.partition("=")
    if unit.strip().lower() != "bytes" or "," in ranges:
        return None
    first_s, dash, last_s = ranges.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_s:
            suffix = int(last_s)
            if suffix <= 0:
                return "unsatisfiable"
            return (max(0, size - suffix), size - 1) if size else "unsatisfiable"
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size:
        return "unsatisfiable"
    if last < first:
        return None
    return first, min(last, size - 1)


def _version_key(version: str) -> Any:
    try:
        from packaging.version import Version

        return (0, Version(version))
    except Exception:  # packaging missing or an invalid version: sort them first, by text
        return (-1, version)


# --------------------------------------------------------------------------------------------
# The index


class FakeUpstream(Resource):
    """A package index as a twisted.web resource, with a request log and misbehaviour hooks.

    Start it with :func:`start_fake_upstream`; until then ``base_url`` is unset.
    """

    isLeaf = True

    def __init__(
        self,
        dists: Mapping[str, Sequence[Dist]] | Iterable[Dist],
        flavour: Flavour = "json",
        *,
        files_base: str | None = None,
        gzip_pages: bool = False,
        core_metadata: bool | Callable[[Dist], bool] = True,
        reactor: Any = None,
    ) -> None:
        super().__init__()
        if flavour not in ("html", "json"):
            raise ValueError(f"flavour must be 'html' or 'json', not {flavour!r}")
        self.flavour: Flavour = flavour
        self.core_metadata = core_metadata
        self.files_base = files_base
        self.gzip_pages = gzip_pages
        self.base_url: str = ""
        self._reactor = reactor
        self.serial = 0
        self._project_serial: dict[str, int] = {}
        self._display: dict[str, str] = {}
        self._files: dict[str, list[FileEntry]] = {}
        self._served: dict[str, bytes] = {}  # filename -> replacement bytes
        self._uploads = 0
        self.log: list[RecordedRequest] = []
        self._log_watchers: list[tuple[Callable[[RecordedRequest], bool], int, Deferred[list[RecordedRequest]]]] = []
        self.behaviour: dict[str, BehaviourValue] = {}
        self.behaviour_fallback: Callable[[RecordedRequest], Action] | None = None
        self.pending: list[Pending] = []
        self.gates: dict[str, Gate] = {}
        all_dists: Iterable[Dist]
        if isinstance(dists, Mapping):
            all_dists = [d for project in dists for d in dists[project]]
        else:
            all_dists = list(dists)
        for dist in all_dists:
            self.add(dist)

    # -- URLs -----------------------------------------------------------------------------

    @property
    def simple_url(self) -> str:
        """The index URL to give an installer (``…/simple/``)."""
        return self.base_url + "/simple/"

    @property
    def _files_base(self) -> str:
        return self.files_base if self.files_base is not None else self.base_url

    def file_path(self, dist: Dist) -> str:
        """The path (on this server) that this flavour's pages link the file to."""
        if self.flavour == "html":
            return "/files/" + dist.filename
        return dist.pypi_path

    def metadata_path(self, dist: Dist) -> str:
        return self.file_path(dist) + ".metadata"

    def has_metadata(self, dist: Dist) -> bool:
        """Whether this index publishes PEP 658 metadata for ``dist`` (wheels of "json" only)."""
        if self.flavour != "json" or not dist.is_wheel:
            return False
        return self.core_metadata(dist) if callable(self.core_metadata) else bool(self.core_metadata)

    def file_url(self, dist: Dist) -> str:
        if self.flavour == "html":
            return self.base_url + "/files/" + quote(dist.filename)
        return self._files_base + quote(dist.pypi_path)

    def page_path(self, project: str) -> str:
        return f"/simple/{normalize_project(project)}/"

    def page_url(self, project: str) -> str:
        return self.base_url + self.page_path(project)

    # -- Mutation -------------------------------------------------------------------------

    def _bump(self, project: str) -> None:
        self.serial += 1
        self._project_serial[project] = self.serial

    def add(
        self,
        dist: Dist,
        *,
        yanked: str | None = None,
        upload_time: datetime.datetime | None = None,
    ) -> FileEntry:
        """Publish a file (changes the project's pages and ETags)."""
        if self._entry(dist.filename) is not None:
            raise ValueError(f"{dist.filename} is already published")
        if upload_time is None:
            upload_time = _UPLOAD_EPOCH + datetime.timedelta(minutes=self._uploads)
        self._uploads += 1
        entry = FileEntry(dist=dist, upload_time=upload_time, yanked=yanked)
        self._files.setdefault(dist.project, []).append(entry)
        self._display.setdefault(dist.project, dist.name or dist.project)
        self._bump(dist.project)
        return entry

    def remove(self, filename: str) -> None:
        entry = self._require(filename)
        self._files[entry.dist.project].remove(entry)
        self._bump(entry.dist.project)

    def yank(self, filename: str, reason: str = "") -> None:
        """PEP 592: mark a file yanked (``reason`` may be empty)."""
        self._update(filename, yanked=reason)

    def unyank(self, filename: str) -> None:
        self._update(filename, yanked=None)

    def replace_data(self, filename: str, data: bytes) -> None:
        """Serve other bytes for a file while pages keep advertising the original hashes.

        Why: simulates an upstream (or a man in the middle) handing out bytes that do not match
        the published digest, persistently rather than once (``"corrupt"`` is per request).
        """
        self._require(filename)
        self._served[filename] = data

    def restore_data(self, filename: str) -> None:
        self._served.pop(filename, None)

    def touch(self, project: str) -> None:
        """Bump the project's serial: its pages (and so their ETags) change, files do not."""
        project = normalize_project(project)
        if project not in self._files:
            raise KeyError(project)
        self._bump(project)

    def dists(self, project: str) -> list[Dist]:
        return [e.dist for e in self._files.get(normalize_project(project), [])]

    def published(self) -> list[Dist]:
        """Every file this index publishes now, of every project."""
        return [e.dist for entries in self._files.values() for e in entries]

    def _entry(self, filename: str) -> FileEntry | None:
        for entries in self._files.values():
            for entry in entries:
                if entry.dist.filename == filename:
                    return entry
        return None

    def _require(self, filename: str) -> FileEntry:
        entry = self._entry(filename)
        if entry is None:
            raise KeyError(filename)
        return entry

    def _update(self, filename: str, **changes: Any) -> None:
        entry = self._require(filename)
        entries = self._files[entry.dist.project]
        entries[entries.index(entry)] = attrs.evolve(entry, **changes)
        self._bump(entry.dist.project)

    # -- Request log ----------------------------------------------------------------------

    @staticmethod
    def _matcher(
        what: str | Callable[[RecordedRequest], bool], method: str | None
    ) -> Callable[[RecordedRequest], bool]:
        if callable(what):
            pred = what
        elif what == "" or what.endswith("/"):
            prefix = what
            pred = lambda r: r.path.startswith(prefix)  # noqa: E731
        else:
            exact = what
            pred = lambda r: r.path == exact  # noqa: E731
        if method is None:
            return pred
        return lambda r: r.method == method and pred(r)

    def requests(
        self, what: str | Callable[[RecordedRequest], bool] = "", method: str | None = None
    ) -> list[RecordedRequest]:
        """Logged requests matching ``what``, optionally only those with ``method``.

        ``what`` ending in ``/`` (or empty) is a path prefix (``"/simple/"``, ``"/packages/"``);
        any other string is an exact path (so a file's path does not also count its
        ``.metadata``); a callable is a predicate on :class:`RecordedRequest`.
        """
        match = self._matcher(what, method)
        return [r for r in self.log if match(r)]

    def count(self, what: str | Callable[[RecordedRequest], bool] = "", method: str | None = None) -> int:
        return len(self.requests(what, method))

    def file_requests(self) -> list[RecordedRequest]:
        """Requests for distribution files and their ``.metadata``."""
        return [r for r in self.log if r.is_file]

    def page_requests(self) -> list[RecordedRequest]:
        """Requests for ``/simple…`` and ``/pypi/…`` pages."""
        return [r for r in self.log if r.is_page]

    def clear_log(self) -> None:
        self.log.clear()

    def wait_for_requests(
        self,
        what: str | Callable[[RecordedRequest], bool] = "",
        count: int = 1,
        method: str | None = None,
    ) -> Deferred[list[RecordedRequest]]:
        """Fires when the log holds ``count`` matching requests (already-logged ones count).

        Fires after the request's action was applied, so a ``"hang"`` request is already in
        :attr:`pending` when this fires.
        """
        match = self._matcher(what, method)
        found = [r for r in self.log if match(r)]
        if len(found) >= count:
            return succeed(found)
        d: Deferred[list[RecordedRequest]] = Deferred()
        self._log_watchers.append((match, count, d))
        return d

    def _notify_log_watchers(self) -> None:
        still = []
        fire = []
        for match, count, d in self._log_watchers:
            found = [r for r in self.log if match(r)]
            if len(found) >= count:
                fire.append((d, found))
            else:
                still.append((match, count, d))
        self._log_watchers = still
        for d, found in fire:
            d.callback(found)

    # -- Misbehaviour control -------------------------------------------------------------

    def gate(self, path: str) -> Gate:
        """The gate for ``"gate"`` responses on this path (created on first use)."""
        gate = self.gates.get(path)
        if gate is None:
            gate = self.gates[path] = Gate()
        return gate

    def release(self, path: str) -> None:
        """Open the gate on ``path``: held bodies continue, later ones pass straight through."""
        self.gate(path).open()

    def _take_pending(self, path: str | None) -> list[Pending]:
        taken = [p for p in self.pending if path is None or p.record.path == path]
        self.pending = [p for p in self.pending if p not in taken]
        return [p for p in taken if not _gone(p.request)]

    def release_pending(self, path: str | None = None, action: Action = None) -> int:
        """Answer hung requests (for ``path``, or all), normally or with ``action``."""
        taken = self._take_pending(path)
        for p in taken:
            self._respond(p.request, p.record, _Actions.parse(action))
        return len(taken)

    def drop_pending(self, path: str | None = None) -> int:
        """Abort the connections of hung requests (for ``path``, or all)."""
        taken = self._take_pending(path)
        for p in taken:
            p.request.channel.transport.abortConnection()
        return len(taken)

    def _action_for(self, record: RecordedRequest) -> Action:
        value = self.behaviour.get(record.path)
        if value is None:
            return self.behaviour_fallback(record) if self.behaviour_fallback else None
        if isinstance(value, list):
            return value.pop(0) if value else None
        if callable(value):
            return value(record)
        return value

    # -- twisted.web ----------------------------------------------------------------------

    def _get_reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _record(self, request: Request) -> RecordedRequest:
        raw_path = request.path.decode("latin-1")
        headers = tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        )

        def first(name: str) -> str | None:
            for key, value in headers:
                if key == name:
                    return value
            return None

        uri = request.uri.decode("latin-1")
        record = RecordedRequest(
            seq=len(self.log),
            method=request.method.decode("ascii"),
            path=unquote(raw_path),
            query=uri.partition("?")[2],
            accept=first("accept"),
            range=first("range"),
            if_none_match=first("if-none-match"),
            if_modified_since=first("if-modified-since"),
            if_range=first("if-range"),
            cache_control=first("cache-control"),
            accept_encoding=first("accept-encoding"),
            user_agent=first("user-agent"),
            headers=headers,
        )
        self.log.append(record)
        return record

    def render(self, request: Request) -> Any:
        record = self._record(request)
        try:
            actions = _Actions.parse(self._action_for(record))
            if actions.hang:
                request.notifyFinish().addErrback(lambda _: None)
                self.pending.append(Pending(record=record, request=request))
            else:
                self._respond(request, record, actions)
        finally:
            self._notify_log_watchers()
        return NOT_DONE_YET

    def _respond(self, request: Request, record: RecordedRequest, actions: _Actions) -> None:
        if actions.drop:
            request.channel.transport.abortConnection()
            return
        if actions.status is not None:
            response = _text(actions.status, f"fake upstream: status {actions.status}\n")
        else:
            try:
                response = self._route(record)
            except Exception as e:  # a bug in the fake must show up as a 500, not a hang
                response = _text(500, f"fake upstream error: {e!r}\n")
        self._send(request, record, response, actions)

    def _send(self, request: Request, record: RecordedRequest, response: _Response, actions: _Actions) -> None:
        status = response.status
        headers = list(response.headers)
        body = response.body
        if response.etag:
            headers.append(("ETag", response.etag))
        if response.last_modified:
            headers.append(("Last-Modified", _http_date(response.last_modified)))
        if response.ranges:
            headers.append(("Accept-Ranges", "bytes"))

        if status == 200 and self._not_modified(record, response):
            keep = {"etag", "cache-control", "vary", "x-pypi-last-serial", "last-modified", "expires"}
            headers = [(k, v) for k, v in headers if k.lower() in keep]
            status, body = 304, b""

        if actions.corrupt and body:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]

        if status == 200 and response.ranges and record.range and record.method in ("GET", "HEAD"):
            if self._if_range_ok(record, response):
                wanted = _parse_range(record.range, len(body))
                if wanted == "unsatisfiable":
                    status, body = 416, b""
                    headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
                    headers.append(("Content-Range", f"bytes */{len(response.body)}"))
                elif wanted is not None:
                    first, last = wanted
                    headers.append(("Content-Range", f"bytes {first}-{last}/{len(body)}"))
                    status, body = 206, body[first : last + 1]

        request.setResponseCode(status)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        if status != 304:
            request.setHeader("Content-Length", str(len(body)))
        if record.method == "HEAD" or status == 304:
            request.write(b"")
            request.finish()
            return

        def at(position: int | None) -> int | None:
            return len(body) // 2 if position == -1 else position

        gate_at = at(actions.gate_at)
        _BodyProducer(
            self._get_reactor(),
            request,
            body,
            gate_at=gate_at,
            gate=self.gate(record.path) if gate_at is not None else None,
            cut_at=at(actions.cut_at),
        ).start()

    @staticmethod
    def _not_modified(record: RecordedRequest, response: _Response) -> bool:
        if record.method not in ("GET", "HEAD"):
            return False
        if record.if_none_match is not None:
            return response.etag is not None and _etag_matches(record.if_none_match, response.etag)
        if record.if_modified_since and response.last_modified is not None:
            try:
                since = parsedate_to_datetime(record.if_modified_since)
            except (TypeError, ValueError):
                return False
            return response.last_modified.replace(microsecond=0) <= since
        return False

    @staticmethod
    def _if_range_ok(record: RecordedRequest, response: _Response) -> bool:
        if not record.if_range:
            return True
        validator = record.if_range.strip()
        if validator.startswith(('"', "W/")):
            return response.etag is not None and validator == response.etag  # strong comparison
        return response.last_modified is not None and validator == _http_date(response.last_modified)

    # -- Routing --------------------------------------------------------------------------

    def _route(self, record: RecordedRequest) -> _Response:
        path = record.path
        if record.method not in ("GET", "HEAD"):
            return _text(405, "method not allowed\n", ("Allow", "GET, HEAD"))
        if path == "/simple":
            return _redirect("/simple/")
        if path == "/simple/":
            return self._index_page(record)
        m = re.fullmatch(r"/simple/([^/]+)(/?)", path)
        if m:
            name, slash = m.groups()
            project = normalize_project(name)
            if project != name or not slash:
                return _redirect(f"/simple/{project}/")
            if project not in self._files:
                return _text(404, "Not Found\n")
            return self._project_page(record, project)
        if path.startswith(_FILE_PREFIXES):
            return self._file(path)
        m = re.fullmatch(r"/pypi/([^/]+)(?:/([^/]+))?/json", path)
        if m and self.flavour == "json":
            name, version = m.groups()
            project = normalize_project(name)
            if project != name:
                tail = f"/{version}/json" if version else "/json"
                return _redirect(f"/pypi/{project}{tail}")
            if project not in self._files:
                return _text(404, "Not Found\n")
            return self._legacy_json(project, version)
        return _text(404, "Not Found\n")

    def _page(self, record: RecordedRequest, content_type: str, body: bytes, serial: int) -> _Response:
        headers: list[tuple[str, str]] = [("Content-Type", content_type)]
        if self.gzip_pages and "gzip" in (record.accept_encoding or "").lower():
            body = gzip.compress(body, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        if self.flavour == "json":
            headers += [
                ("Cache-Control", "max-age=600, public"),
                ("X-PyPI-Last-Serial", str(serial)),
                ("Vary", "Accept, Accept-Encoding"),
            ]
            return _Response(200, tuple(headers), body, etag=_strong_etag(body))
        if self.gzip_pages:
            headers.append(("Vary", "Accept-Encoding"))
        last_modified = _UPLOAD_EPOCH.replace(microsecond=0) + datetime.timedelta(seconds=serial)
        return _Response(200, tuple(headers), body, etag=_strong_etag(body), last_modified=last_modified)

    def _content_type(self, record: RecordedRequest) -> str:
        return "text/html" if self.flavour == "html" else _negotiate(record.accept)

    def _index_page(self, record: RecordedRequest) -> _Response:
        content_type = self._content_type(record)
        projects = sorted(self._files)
        if content_type == JSON_TYPE:
            doc = {
                "meta": {"api-version": "1.1", "_last-serial": self.serial},
                "projects": [{"name": self._display[p], "_last-serial": self._project_serial[p]} for p in projects],
            }
            body = json.dumps(doc, indent=1).encode("utf-8")
        else:
            head = '    <meta name="pypi:repository-version" content="1.1">\n' if self.flavour == "json" else ""
            links = "".join(
                f'    <a href="{html.escape(self._index_href(p))}">{html.escape(self._display[p])}</a><br />\n'
                for p in projects
            )
            body = (
                "<!DOCTYPE html>\n<html>\n  <head>\n"
                f"{head}    <title>Simple index</title>\n  </head>\n  <body>\n"
                f"{links}  </body>\n</html>\n<!--SERIAL {self.serial}-->\n"
            ).encode()
        return self._page(record, content_type, body, self.serial)

    def _index_href(self, project: str) -> str:
        return f"{project}/" if self.flavour == "html" else f"/simple/{project}/"

    def _project_page(self, record: RecordedRequest, project: str) -> _Response:
        content_type = self._content_type(record)
        entries = self._files[project]
        serial = self._project_serial[project]
        if content_type == JSON_TYPE:
            body = json.dumps(self._project_json(project, entries, serial), indent=1).encode("utf-8")
        else:
            body = self._project_html(project, entries, serial).encode("utf-8")
        return self._page(record, content_type, body, serial)

    def _project_json(self, project: str, entries: list[FileEntry], serial: int) -> dict[str, Any]:
        files = []
        for entry in entries:
            dist = entry.dist
            item: dict[str, Any] = {
                "filename": dist.filename,
                "url": self.file_url(dist),
                "hashes": {"sha256": dist.sha256},
                "requires-python": dist.requires_python,
                "size": dist.size,
                "upload-time": entry.upload_time_iso,
                "yanked": _json_yanked(entry.yanked),
            }
            if self.has_metadata(dist):
                item["core-metadata"] = {"sha256": dist.metadata_sha256}
                item["data-dist-info-metadata"] = {"sha256": dist.metadata_sha256}
            item["x-extra"] = {"kept": True}
            files.append(item)
        versions = sorted({e.dist.version for e in entries}, key=_version_key)
        return {
            "meta": {"api-version": "1.1", "_last-serial": serial},
            "name": project,
            "versions": versions,
            "files": files,
            "x-extra": {"kept": True},
        }

    def _project_html(self, project: str, entries: list[FileEntry], serial: int) -> str:
        links = []
        for entry in entries:
            dist = entry.dist
            if self.flavour == "html":
                href = f"../../files/{quote(dist.filename)}#sha256={dist.sha256}"
            else:
                href = f"{self.file_url(dist)}#sha256={dist.sha256}"
            attributes = [f'href="{html.escape(href)}"']
            if dist.requires_python is not None:
                attributes.append(f'data-requires-python="{html.escape(dist.requires_python)}"')
            if self.has_metadata(dist):
                attributes.append(f'data-dist-info-metadata="sha256={dist.metadata_sha256}"')
                attributes.append(f'data-core-metadata="sha256={dist.metadata_sha256}"')
            if entry.yanked is not None:
                attributes.append(f'data-yanked="{html.escape(entry.yanked)}"')
            links.append(f"    <a {' '.join(attributes)}>{html.escape(dist.filename)}</a><br />\n")
        head = '    <meta name="pypi:repository-version" content="1.1">\n' if self.flavour == "json" else ""
        return (
            "<!DOCTYPE html>\n<html>\n  <head>\n"
            f"{head}    <title>Links for {html.escape(project)}</title>\n  </head>\n  <body>\n"
            f"    <h1>Links for {html.escape(project)}</h1>\n"
            f"{''.join(links)}  </body>\n</html>\n<!--SERIAL {serial}-->\n"
        )

    def _file(self, path: str) -> _Response:
        for entries in self._files.values():
            for entry in entries:
                dist = entry.dist
                for base in ("/files/" + dist.filename, dist.pypi_path):
                    if path == base:
                        data = self._served.get(dist.filename, dist.data)
                        return _Response(
                            200,
                            (
                                ("Content-Type", "application/octet-stream"),
                                ("Cache-Control", "max-age=365000000, immutable, public"),
                            ),
                            data,
                            etag=f'"{dist.sha256[:40]}"',
                            last_modified=entry.upload_time,
                            ranges=True,
                        )
                    if path == base + ".metadata" and self.has_metadata(dist):
                        return _Response(
                            200,
                            (
                                ("Content-Type", "application/octet-stream"),
                                ("Cache-Control", "max-age=365000000, immutable, public"),
                            ),
                            dist.metadata,
                            etag=f'"{dist.metadata_sha256[:40]}"',
                            last_modified=entry.upload_time,
                            ranges=True,
                        )
        return _text(404, "Not Found\n")

    def _legacy_json(self, project: str, version: str | None) -> _Response:
        entries = self._files[project]
        by_version: dict[str, list[FileEntry]] = {}
        for entry in entries:
            by_version.setdefault(entry.dist.version, []).append(entry)
        ordered = sorted(by_version, key=_version_key)
        if version is not None and version not in by_version:
            return _text(404, "Not Found\n")
        unyanked = [v for v in ordered if any(e.yanked is None for e in by_version[v])]
        latest = version or (unyanked or ordered or [""])[-1]
        chosen = by_version.get(latest, [])
        first = chosen[0].dist if chosen else None
        info = {
            "name": self._display[project],
            "version": latest,
            "summary": f"Test distribution {self._display[project]}",
            "requires_python": first.requires_python if first else None,
            "requires_dist": list(first.requires_dist) or None if first else None,
            "author": "",
            "license": "",
            "home_page": "",
            "project_urls": None,
            "yanked": bool(chosen) and all(e.yanked is not None for e in chosen),
            "yanked_reason": next((e.yanked for e in chosen if e.yanked), None),
            "package_url": f"{self.base_url}/project/{project}/",
            "project_url": f"{self.base_url}/project/{project}/",
            "release_url": f"{self.base_url}/project/{project}/{latest}/",
        }
        doc: dict[str, Any] = {
            "info": info,
            "last_serial": self._project_serial[project],
            "urls": [self._legacy_file(e) for e in chosen],
            "vulnerabilities": [],
        }
        if version is None:
            doc["releases"] = {v: [self._legacy_file(e) for e in by_version[v]] for v in ordered}
        body = json.dumps(doc, indent=1).encode("utf-8")
        headers = (
            ("Content-Type", "application/json"),
            ("Cache-Control", "max-age=900, public"),
            ("X-PyPI-Last-Serial", str(self._project_serial[project])),
        )
        return _Response(200, headers, body, etag=_strong_etag(body))

    def _legacy_file(self, entry: FileEntry) -> dict[str, Any]:
        dist = entry.dist
        return {
            "filename": dist.filename,
            "url": self.file_url(dist),
            "digests": {"sha256": dist.sha256, "blake2b_256": dist.blake2b_256, "md5": dist.md5},
            "md5_digest": dist.md5,
            "size": dist.size,
            "requires_python": dist.requires_python,
            "yanked": entry.yanked is not None,
            "yanked_reason": entry.yanked or None,
            "upload_time": entry.upload_time.strftime("%Y-%m-%dT%H:%M:%S"),
            "upload_time_iso_8601": entry.upload_time_iso,
            "packagetype": dist.packagetype,
            "python_version": "py3" if dist.is_wheel else "source",
            "has_sig": False,
            "comment_text": "",
            "downloads": -1,
        }


def _json_yanked(yanked: str | None) -> bool | str:
    if yanked is None:
        return False
    return yanked or True


def _text(status: int, text: str, *extra: tuple[str, str]) -> _Response:
    return _Response(status, (("Content-Type", "text/plain; charset=utf-8"), *extra), text.encode("utf-8"))


def _redirect(location: str) -> _Response:
    return _Response(
        301,
        (("Location", location), ("Content-Type", "text/plain; charset=utf-8")),
        f"Moved to {location}\n".encode(),
    )


# --------------------------------------------------------------------------------------------
# Listening


class _QuietSite(Site):
    """A Site that does not write an access log line per request (the fake keeps its own)."""

    noisy = False

    def log(self, request: Request) -> None:
        pass


class _TrackingFactory(WrappingFactory):
    """Knows the live connections, so stopping can close them and wait until they are gone."""

    noisy = False

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._empty_waiters: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._empty_waiters = self._empty_waiters, []
            for d in waiters:
                d.callback(None)

    def when_empty(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._empty_waiters.append(d)
        return d


@attrs.frozen
class Listening:
    """A running fake upstream: where it listens, and how to stop it."""

    upstream: FakeUpstream
    port: IListeningPort = attrs.field(repr=False)
    factory: _TrackingFactory = attrs.field(repr=False)
    base_url: str

    @property
    def port_number(self) -> int:
        return self.port.getHost().port

    def stop(self) -> Deferred[None]:
        """Stop listening, abort every open connection, and wait until they are closed."""
        stopped = maybeDeferred(self.port.stopListening)
        self.upstream.drop_pending()
        for wrapper in list(self.factory.protocols):
            wrapper.transport.abortConnection()
        done = DeferredList([stopped, self.factory.when_empty()], fireOnOneErrback=True, consumeErrors=True)
        return done.addCallback(lambda _: None)


def start_fake_upstream(upstream: FakeUpstream, *, reactor: Any = None, interface: str = "127.0.0.1") -> Listening:
    """Listen on ``interface`` at a free port; sets ``upstream.base_url`` (no trailing slash)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    if upstream._reactor is None:
        upstream._reactor = reactor
    site = _QuietSite(upstream)
    factory = _TrackingFactory(site)
    port = reactor.listenTCP(0, factory, interface=interface)
    base_url = f"http://{interface}:{port.getHost().port}"
    upstream.base_url = base_url
    return Listening(upstream=upstream, port=port, factory=factory, base_url=base_url)


def upstream_file_counts(upstream: FakeUpstream) -> dict[str, int]:
    """How many times the upstream was asked for each file (and ``.metadata``), by file name."""
    counts: dict[str, int] = {}
    for r in upstream.file_requests():
        name = r.path.rsplit("/", 1)[-1]
        counts[name] = counts.get(name, 0) + 1
    return counts
