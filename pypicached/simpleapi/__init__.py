"""
The simple repository API's formats (PEP 503 HTML, PEP 691 JSON, the project list,
the JSON API): reading them, writing them, their file links and content negotiation.
"""

from pypicached.simpleapi import pypijson, simple
from pypicached.simpleapi.links import FileLink, new_hasher, proxy_path, relative_href, split_url
from pypicached.simpleapi.negotiation import UPSTREAM_ACCEPT, Format, choose_format
from pypicached.simpleapi.projectlist import events_of, json_events
from pypicached.simpleapi.simple import (
    HTML_TAIL,
    INDEX_TITLE,
    BadPage,
    capped_meta,
    html_head,
    index_rows,
    is_project_entry,
    parse_json_object,
    project_status,
)

__all__ = [
    # modules other layers use as a whole
    "pypijson",
    "simple",
    # links
    "FileLink",
    "new_hasher",
    "proxy_path",
    "relative_href",
    "split_url",
    # negotiation
    "UPSTREAM_ACCEPT",
    "Format",
    "choose_format",
    # the project list
    "events_of",
    "json_events",
    # project pages
    "HTML_TAIL",
    "INDEX_TITLE",
    "BadPage",
    "capped_meta",
    "html_head",
    "index_rows",
    "is_project_entry",
    "parse_json_object",
    "project_status",
]
