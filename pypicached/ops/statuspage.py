"""
The status page at ``/``: the ``/stats`` summary for a person, in one HTML
document with no external assets (it must work on a LAN without internet),
and how to point each installer at this very proxy.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any
from urllib.parse import urlsplit

from pypicached.ops.chart import chart
from pypicached.ops.summary import human_bytes, human_duration, percent
from pypicached.ops.throughput import MIN_SAMPLE_BYTES

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:64em;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#666}.cards{display:flex;flex-wrap:wrap;gap:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.7em 1em;min-width:12em}
.card b{display:block;font-size:1.5em}.bar{background:#eee;border-radius:4px;height:.6em;margin-top:.3em}
.bar i{display:block;background:#4a8;height:100%;border-radius:4px}
table{border-collapse:collapse}td,th{padding:.2em .8em .2em 0;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f6f6;padding:.6em .8em;overflow-x:auto;border-radius:4px}
figure{margin:.5em 0}.bad{color:#b22}.ok{color:#282}
.down{background:#fbe9e9;border:1px solid #b22;color:#b22;border-radius:6px;padding:.6em 1em;font-weight:600}
"""


def base_url(host: bytes | None, secure: bool) -> str:
    """This proxy's URL as the browser reached it, or a placeholder if the Host header is odd."""
    text = (host or b"").decode("latin-1")
    if not _HOST.match(text):
        text = "PROXY-HOST:3141"
    return f"{'https' if secure else 'http'}://{text}"


def render(stats: dict[str, Any], base: str) -> bytes:
    """The page, from the ``/stats`` summary and this proxy's base URL."""
    e = escape
    up = stats["upstream"]
    card_html, projects, outages = _cards(stats), _top_projects(stats), _outages(stats)
    simple = base + "/simple/"
    trusted = "" if base.startswith("https:") else (urlsplit(base).hostname or "")
    snippets = _snippets(simple, trusted)
    started, since = e(stats["started"] or "-"), e(stats["counting_since"] or "-")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta http-equiv="refresh" content="30"><title>pypicached</title><style>{_STYLE}</style></head>
<body>
<h1>pypicached</h1>
<p class="sub">version {e(stats["version"])} &middot; caching <code>{e(up["url"])}</code>
&middot; running since {started} &middot; figures counted since {since}</p>
{outages}<div class="cards">{card_html}</div>

<h2>The last {len(stats["days"])} days</h2>
<figure id="days">{chart(stats["days"])}</figure>
{_time_saved(stats)}
{_policy(stats)}
{_cache(stats)}

<h2>Projects that saved the most</h2>
<table id="top-projects"><tr><th>project</th><th>served from cache</th></tr>{projects}</table>

{_upstream(stats)}
{_indexes(stats)}
{_certificate(stats.get("certificate"))}

<h2>Use this proxy</h2>
{snippets}
<p class="sub">Figures as JSON: <a href="/stats">/stats</a> &middot; Prometheus: <a href="/metrics">/metrics</a>
&middot; health check: <a href="/health">/health</a></p>
</body></html>
""".encode()


def _cache(stats: dict[str, Any]) -> str:
    """The cache's size against its budget and the disk's free space, with a bar."""
    e, cache = escape, stats["cache"]
    used = min(1.0, cache["used_ratio"] or 0.0)
    return f"""<h2>Cache</h2>
<p id="cache-size">{e(human_bytes(cache["size_bytes"]))} in {cache["files"]} files, of a budget of
{e(human_bytes(cache["max_size_bytes"]))} ({e(percent(cache["used_ratio"]))});
{e(human_bytes(cache["free_bytes"]))} free on disk (keeping at least {e(human_bytes(cache["min_free_bytes"]))}).
Evicted since start: {cache["evictions"] or 0}. Digest mismatches refused: {stats["digest_mismatches"] or 0}.</p>
<div class="bar"><i style="width:{used * 100:.1f}%"></i></div>"""


def _upstream(stats: dict[str, Any]) -> str:
    """The first upstream's last answer and recent errors."""
    e, up = escape, stats["upstream"]
    answered = up["last_answer"] or "not yet since the daemon started"
    return f"""<h2>Upstream</h2>
<p id="upstream">Last answer: {e(answered)}. Last error: {e(up["last_error"] or "none")}.
Stale index pages served since start: {stats["stale_pages_served"] or 0}.</p>
<ul id="upstream-errors">{_errors(up)}</ul>"""


def _cards(stats: dict[str, Any]) -> str:
    """The figures at the top: hit ratios, bytes saved, downloads in flight."""
    e, today, ever = escape, stats["today"], stats["all_time"]
    cards = [
        (
            "Hit ratio today",
            percent(today["hit_ratio"]),
            f"{today['hits']} hits, {today['misses']} misses",
            "hit-ratio-today",
        ),
        (
            "Hit ratio, all time",
            percent(ever["hit_ratio"]),
            f"{ever['hits']} hits, {ever['misses']} misses",
            "hit-ratio",
        ),
        (
            "Saved today",
            human_bytes(today["saved_bytes"]),
            f"served {human_bytes(today['served_bytes'])}, fetched {human_bytes(today['fetched_bytes'])}",
            "saved-today",
        ),
        (
            "Saved, all time",
            human_bytes(ever["saved_bytes"]),
            f"served {human_bytes(ever['served_bytes'])}, fetched {human_bytes(ever['fetched_bytes'])}",
            "saved-all-time",
        ),
        ("Downloads in flight", str(stats["downloads_in_flight"] or 0), "files being fetched now", "in-flight"),
    ]
    return "".join(
        f'<div class="card" id="{ident}">{e(label)}<b>{e(value)}</b><span class="sub">{e(note)}</span></div>'
        for label, value, note, ident in cards
    )


def _time_saved(stats: dict[str, Any]) -> str:
    """Saved bytes as time, at the upstream's measured speed: an estimate, and said to be one."""
    rate, saved = stats.get("upstream_throughput_bytes_per_second"), stats.get("time_saved_seconds") or {}
    if not rate or saved.get("today") is None:
        return (
            f'<p id="time-saved" class="sub">No estimate of the download time saved yet: it needs the speed of a '
            f"file of {escape(human_bytes(MIN_SAMPLE_BYTES))} or more downloaded from upstream since the daemon "
            "started.</p>"
        )
    return (
        f'<p id="time-saved">About {escape(human_duration(saved["today"]))} of downloading saved today '
        f"({escape(human_duration(saved['all_time']))} all time), at the {escape(human_bytes(rate))}/s "
        "measured on recent downloads from upstream (an estimate).</p>"
    )


def _policy(stats: dict[str, Any]) -> str:
    """
    The supply-chain policy's report (``stats["policy"]``, from ``policy.gate``): counts
    by rule, the advisory feed's state and today's held-back files; nothing without a policy.
    """
    policy = stats.get("policy")
    if not policy:
        return ""
    e = escape

    def by_rule(key: str) -> str:
        return (
            ", ".join(f"<code>{e(str(rule))}</code> {e(str(n))}" for rule, n in sorted((policy.get(key) or {}).items()))
            or "none"
        )

    rows = (
        "".join(
            f"<tr><td>{e(str(h['project']))}</td><td><code>{e(str(h['filename']))}</code></td>"
            f"<td>{e(str(h['rule']))}</td><td>{e(str(h['reason']))}</td></tr>"
            for h in policy.get("held_back_today") or ()
        )
        or '<tr><td colspan=4 class="sub">nothing held back today</td></tr>'
    )
    return f"""<h2>Held back by the policy</h2>
<p id="policy-rules">Files held back since start, by rule: {by_rule("held_back_by_rule")}.
Requests refused (403): {by_rule("denied_by_rule")}. Served but named by an advisory: {by_rule("flagged_by_rule")}.</p>
{_feed(policy.get("advisories"))}
<table id="held-back"><tr><th>project</th><th>file</th><th>rule</th><th>reason</th></tr>{rows}</table>
"""


def _feed(feed: dict[str, Any] | None) -> str:
    """The advisory feed's line: how many advisories, from where, and how its last refresh went."""
    if not feed:
        return ""
    e = escape
    state = f'<span class="bad">last refresh failed: {e(feed["last_error"])}</span>' if feed.get("last_error") else ""
    refreshed = e(feed.get("last_refresh") or "not yet")
    return (
        f'<p id="advisories">Advisories: {feed.get("count", 0)} from <code>{e(str(feed.get("url")))}</code>, '
        f"last refreshed {refreshed}. {state}</p>"
    )


def _certificate(cert: dict[str, Any] | None) -> str:
    """The ACME certificate's line: its names, expiry and renewal, and why the last order failed."""
    if not cert:
        return ""
    e = escape
    failed = cert.get("last_error")
    state = f'<span class="bad">last renewal failed ({cert["failures"]}x): {e(failed)}</span>' if failed else ""
    expiry = (
        "a self-signed placeholder until the first issuance"
        if cert["placeholder"]
        else f"valid until {e(cert['not_after'])}, renewed from {e(cert['renews_at'])}"
    )
    return f'<p id="certificate">TLS certificate for {e(", ".join(cert["domains"]))} from ACME: {expiry}. {state}</p>'


def _top_projects(stats: dict[str, Any]) -> str:
    return (
        "".join(
            f"<tr><td>{escape(p['project'])}</td><td class=n>{escape(human_bytes(p['saved_bytes']))}</td></tr>"
            for p in stats["top_projects"]
        )
        or '<tr><td colspan=2 class="sub">nothing served from the cache yet</td></tr>'
    )


def _errors(up: dict[str, Any]) -> str:
    return (
        "".join(
            f"<li><span class=sub>{escape(err['time'])}</span> {escape(err['error'])}</li>"
            for err in up["recent_errors"]
        )
        or "<li class=ok>none since the daemon started</li>"
    )


def _indexes(stats: dict[str, Any]) -> str:
    """With several indexes, one row each: name, URL, state."""
    upstreams = stats.get("upstreams", ())
    if len(upstreams) < 2:
        return ""
    rows = "".join(
        f"<tr><td>{escape(u['name'])}</td><td><code>{escape(u['url'])}</code></td>"
        f'<td class="{"bad" if u["state"] != "up" else "ok"}">{escape(u["state"])}</td></tr>'
        for u in upstreams
    )
    return f'<table id="indexes"><tr><th>index</th><th>url</th><th>state</th></tr>{rows}</table>'


def _outages(stats: dict[str, Any]) -> str:
    """A red banner for each upstream that is down."""
    e = escape
    upstreams = stats.get("upstreams", ())
    # a mirror of an index that has another up: its requests go to that one meanwhile
    spare = {u["name"] for u in upstreams if u["state"] != "down"}
    return "".join(
        f'<p class="down" id="outage">Upstream {e(u["url"])} is down since {e(u["since"])} ({e(u["reason"] or "")}); '
        + (
            "requests go to the next mirror that is up; "
            if u["name"] in spare
            else "cached pages are served stale, anything else is refused until it answers; "
        )
        + f"next try at {e(u['next_probe'] or 'now')}.</p>"
        for u in upstreams
        if u["state"] == "down"
    )


def _snippets(simple: str, trusted_host: str) -> str:
    """Copy-paste configuration for each installer, naming this proxy."""
    e = escape
    trust_env = f"\nexport PIP_TRUSTED_HOST={trusted_host}" if trusted_host else ""
    trust_conf = f"\ntrusted-host = {trusted_host}" if trusted_host else ""
    pdm_env = "\nexport PDM_PYPI_VERIFY_SSL=false" if trusted_host else ""
    pdm_verify = "\nverify_ssl = false" if trusted_host else ""
    blocks = [
        (
            "pip",
            f"export PIP_INDEX_URL={simple}{trust_env}\n\n# or in pip.conf\n[global]\nindex-url = {simple}{trust_conf}",
        ),
        (
            "uv",
            f"export UV_DEFAULT_INDEX={simple}\n\n# or in pyproject.toml\n[[tool.uv.index]]\n"
            f'name = "lan"\nurl = "{simple}"\ndefault = true',
        ),
        (
            "poetry",
            f"poetry source add --priority=primary lan {simple}\n\n# or in pyproject.toml\n"
            f'[[tool.poetry.source]]\nname = "lan"\nurl = "{simple}"\npriority = "primary"',
        ),
        (
            "pdm",
            f"export PDM_PYPI_URL={simple}{pdm_env}\n\n# or in pyproject.toml\n[[tool.pdm.source]]\n"
            f'name = "pypi"\nurl = "{simple}"{pdm_verify}',
        ),
    ]
    return "".join(f'<h3>{e(tool)}</h3><pre id="use-{tool}">{e(text)}</pre>' for tool, text in blocks)
