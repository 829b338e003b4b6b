"""
Every path the proxy answers, as data: one row a path, first match wins; the
matcher (``http.routes``) gives 404, 405 and ``Allow`` from it. And the paths
answered to anyone, token or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pypicached.cache import INDEX, JSON_API, PROJECT, PageKind
from pypicached.http.routes import GET_HEAD, POST, Route, methods_of
from pypicached.ops.control import Control


def _page_route(kind: PageKind, *pattern: str, slash: bool | None = None) -> Route:
    return Route(
        GET_HEAD, pattern, lambda proxy, request, found: proxy.answer_page(request, kind, found), "page", slash
    )


def _control_route(
    methods: tuple[bytes, ...], pattern: tuple[str, ...], answer: Callable[..., Any], kind: str
) -> Route:
    return Route(
        methods,
        pattern,
        lambda proxy, request, found: proxy.answer_control(request, answer(proxy.control, request, **found.values)),
        kind,
    )


#: Every path the proxy answers, first match wins.
ROUTES = (
    _control_route(GET_HEAD, (), Control.status_page, "status"),
    _control_route(GET_HEAD, ("stats",), Control.stats, "status"),
    _control_route(GET_HEAD, ("metrics",), Control.metrics, "status"),
    _control_route(GET_HEAD, ("health",), Control.health, "status"),
    _control_route(GET_HEAD, (".well-known", "acme-challenge", "{token}"), Control.acme_challenge, "acme"),
    _control_route(GET_HEAD, ("policy", "{project}"), Control.policy, "status"),
    _control_route(GET_HEAD, ("policy", "{project}", "{version}"), Control.policy, "status"),
    _control_route(POST, ("admin", "purge", "{project}"), Control.purge, "admin"),
    _control_route(POST, ("admin", "purge-file", "{filename}"), Control.purge_file, "admin"),
    _control_route(POST, ("admin", "{*rest}"), lambda control, request, rest: control.no_such_action(request), "admin"),
    _page_route(INDEX, "simple"),
    _page_route(PROJECT, "simple", "{project}"),
    _page_route(JSON_API, "pypi", "{project}", "json", slash=False),
    _page_route(JSON_API, "pypi", "{project}", "{version}", "json", slash=False),
    _page_route(INDEX, "index", "{index}", "simple"),
    _page_route(PROJECT, "index", "{index}", "simple", "{project}"),
    _page_route(JSON_API, "index", "{index}", "pypi", "{project}", "json", slash=False),
    _page_route(JSON_API, "index", "{index}", "pypi", "{project}", "{version}", "json", slash=False),
    Route(
        GET_HEAD,
        ("packages", "{+file}"),
        lambda proxy, request, found: proxy.answer_file(request, found),
        "file",
        slash=False,
    ),
)
METHODS = methods_of(ROUTES)
#: Answered without a token: load balancers' health checks, and the ACME CA checking its challenges.
OPEN_PATHS = frozenset({b"/health", b"/health/"})
OPEN_PREFIXES = (b"/.well-known/acme-challenge/",)


def is_open(path: bytes) -> bool:
    """Whether ``path`` is answered to anyone, with or without a token."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
