"""
The upstream index over the network: where an index lives (``UpstreamURLs``), the
client that fetches from it through treq with bytes taken as served, the bodies it
reads (bounded, and checked for a stall or a cut), each upstream's health (the
circuit breaker and its probe), an index's ordered mirrors, and what the client
reports to whoever keeps the figures.
"""

from pypicached.upstream.agent import ExactURL, as_sent, as_served, pooled_agent, upstream_http
from pypicached.upstream.body import (
    MAX_PAGE_BYTES,
    BodyReader,
    discard_body,
    read_body,
    read_body_into,
)
from pypicached.upstream.breaker import UpstreamDown, UpstreamHealth, iso
from pypicached.upstream.client import Requests, UpstreamClient, UpstreamURLs
from pypicached.upstream.errors import UpstreamError, failure_reason
from pypicached.upstream.mirrors import IndexClient, IndexHealth, MirrorClient, MirrorsHealth, served_url
from pypicached.upstream.report import Unreported, UpstreamReport

__all__ = [
    "MAX_PAGE_BYTES", "BodyReader", "ExactURL", "IndexClient", "IndexHealth", "MirrorClient", "MirrorsHealth",
    "Requests", "Unreported", "UpstreamClient", "UpstreamDown", "UpstreamError", "UpstreamHealth", "UpstreamReport",
    "UpstreamURLs", "as_sent", "as_served", "discard_body", "failure_reason", "iso", "pooled_agent", "read_body",
    "read_body_into", "served_url", "upstream_http",
]  # fmt: skip
