"""The daemon as twistd runs it: the parts' tree, then one listener per endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from pypicached.config import Settings
from pypicached.http.acme import AcmeFiles
from pypicached.http.tls import ReloadableContext, TLSFiles, tls_endpoint
from pypicached.service.wiring import Proxy

log = Logger()


# Any: the whole reactor (time, threads, TCP, TLS); no one interface says so
def endpoint_for(
    reactor: Any, description: str, settings: Settings
) -> tuple[IStreamServerEndpoint, ReloadableContext | None]:
    """A listen string's endpoint: ours for ``ssl:`` (TLS 1.2+, reloadable), Twisted's for the rest."""
    default_files = (
        TLSFiles(settings.tls_cert, settings.tls_key, settings.tls_chain)
        if settings.tls_cert is not None and settings.tls_key is not None
        else None
    )
    if settings.acme_directory is not None:  # the certificate the daemon keeps itself (docs/acme.md)
        default_files = AcmeFiles(Path(settings.cache_dir) / "acme").tls
    tls = tls_endpoint(reactor, description, default_files)
    if tls is not None:
        return tls
    return serverFromString(reactor, description), None


def make_service(settings: Settings, reactor: Any) -> MultiService:
    """The daemon as a twistd service: the parts' tree (``Proxy.service``), the listeners last so they stop first."""
    proxy = Proxy(settings, reactor)
    top = proxy.service
    keeper = proxy.certificates
    if keeper is not None and keeper.files.ensure_placeholder(settings.acme_domains):
        log.info("No ACME certificate yet: ssl listeners serve a self-signed one until it is issued")
    for number, description in enumerate(settings.listen):
        endpoint, context = endpoint_for(reactor, description, settings)
        if context is not None:
            proxy.cache_service.tls_contexts.append(context)
            if keeper is not None and context.files == keeper.files.tls:
                keeper.contexts.append(context)
        listener = StreamServerEndpointService(endpoint, proxy.site)
        listener.setName(f"listener {number}")
        listener.setServiceParent(top)
    return top
