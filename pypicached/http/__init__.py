"""
The HTTP side: the resource that turns requests into the cache's answers and back,
the site and its access log, conditional and range requests, TLS listeners.
"""

from pypicached.http.site import AccessLog, ProxySite
from pypicached.http.tls import ReloadableContext, TLSFiles, split_endpoint, tls_endpoint
from pypicached.http.web import ProxyResource

__all__ = ["AccessLog", "ProxyResource", "ProxySite", "ReloadableContext", "TLSFiles", "split_endpoint", "tls_endpoint"]
