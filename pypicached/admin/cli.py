"""
``pypicached-admin``: the operator's command for the cache.

It reads the daemon's config file to find the cache directory and the daemon.
``stats``, ``purge`` and ``purge-file`` ask the running daemon (over loopback, or
with the bearer token), since it holds pages in memory and counts the cache's
size; when no daemon answers they work on the cache directory directly.
``verify`` reads the cache directory itself; ``prefetch`` fetches through the
daemon like any installer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, unquote, urlsplit

import treq
from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionRefusedError as ConnectionRefused
from twisted.internet.task import react

from pypicached.admin import carry, lockfetch, prefetching, tokens, verify
from pypicached.admin.arguments import daemon_url, load, parser
from pypicached.admin.progress import Progress
from pypicached.base.names import is_valid_name, is_valid_version, normalize
from pypicached.cache.files import remove_cached_file
from pypicached.cache.housekeeping import CacheUsage
from pypicached.cache.records import remove_project_records
from pypicached.cache.space import free_space, scan, scan_pages
from pypicached.config import ConfigError, Settings
from pypicached.ops.ledger import STATE_FILE, Ledger
from pypicached.ops.summary import as_text, human_bytes, summary
from pypicached.policy.explain import as_text as explained
from pypicached.upstream.errors import failure_reason

#: Seconds to wait for the daemon's answer (a hung daemon must not hang the command).
TIMEOUT = 30


class AdminError(Exception):
    """Something the operator must fix; printed without a traceback."""


class Admin:
    """The commands, on one cache directory and one daemon URL."""

    def __init__(self, settings: Settings, url: str | None, token: str | None, http: Any, out: TextIO) -> None:
        self.settings = settings
        self.root = Path(settings.cache_dir)
        self.url = url
        self.token = token
        self.http = http
        self.out = out

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def _ask(self, method: str, path: str) -> tuple[int, Any] | None:
        """The daemon's JSON answer, or None if no daemon listens there."""
        if self.url is None:
            self.out.write(
                f"(no daemon address in the config's listen setting: give --url if one runs; "
                f"working on {self.root} directly)\n"
            )
            self._require_cache()
            return None
        try:
            response = await self.http.request(method, self.url + path, headers=self._headers(), timeout=TIMEOUT)
            body = await response.content()
        except ConnectionRefused as e:
            self.out.write(f"(no daemon answers at {self.url}: {failure_reason(e)}; working on {self.root} directly)\n")
            self._require_cache()
            return None
        except Exception as e:
            raise AdminError(f"cannot ask the daemon at {self.url}: {failure_reason(e)}") from None
        try:
            return response.code, json.loads(body)
        except ValueError:
            raise AdminError(f"{self.url}{path} answered {response.code}: {body[:200]!r}") from None

    def _require_cache(self) -> None:
        """Refuse to report on a cache directory that is not there (a typo) or not ours to read."""
        files = self.root / "files"
        if not files.is_dir() or not os.access(files, os.R_OK | os.X_OK):
            raise AdminError(f"{files} is not a cache directory this user can read (see --cache-dir, --config)")
        return None

    @staticmethod
    def _check(code: int, answer: Any) -> Any:
        if code != 200:
            raise AdminError(f"the daemon refused ({code}): {answer.get('error', answer)}")
        return answer

    # --- stats ---------------------------------------------------------------------

    async def stats(self, as_json: bool) -> int:
        answered = await self._ask("GET", "/stats")
        figures = self._check(*answered) if answered else self.stats_from_disk()
        self.out.write(json.dumps(figures, indent=1) + "\n" if as_json else as_text(figures))
        return 0

    def stats_from_disk(self) -> dict[str, Any]:
        now = time.time()
        entries = scan(self.root / "files") + scan_pages(self.root / "pages")
        free = free_space(self.root) if self.root.exists() else 0
        usage = CacheUsage(
            sum(e.size for e in entries),
            sum(not e.page for e in entries),
            free,
            self.settings.max_size,
            self.settings.min_free,
        )
        ledger = Ledger.load(self.root / STATE_FILE, now)
        return summary(ledger, usage, now=now, upstream_url=self.settings.indexes[0].url)

    # --- policy --------------------------------------------------------------------

    async def policy_check(self, requirement: str) -> int:
        """What the policy does to ``NAME`` or ``NAME==VERSION``, and why, as the daemon judges it now."""
        name, _, version = requirement.partition("==")
        if not is_valid_name(name.strip()) or (version and not is_valid_version(version.strip())):
            raise AdminError(f"expected NAME or NAME==VERSION, not {requirement!r}")
        path = f"/policy/{quote(normalize(name.strip()))}" + (f"/{quote(version.strip())}" if version else "")
        answered = await self._ask("GET", path)
        if answered is None:
            raise AdminError(
                "the policy check asks the running daemon (it holds the advisories and the pages); none answers"
            )
        self.out.write(explained(self._check(*answered)))
        return 0

    # --- purges --------------------------------------------------------------------

    async def purge(self, project: str) -> int:
        if not is_valid_name(project):
            raise AdminError(f"not a project name: {project!r}")
        project = normalize(project)
        answered = await self._ask("POST", f"/admin/purge/{quote(project)}")
        if answered:
            removed = self._check(*answered)["removed_pages"]
        else:
            removed = sum(remove_project_records(root, project) for root in self.root.glob("pages/*"))
        self.out.write(f"Purged {removed} index page(s) of {project}; the next request fetches them anew.\n")
        return 0

    async def purge_file(self, url_or_name: str) -> int:
        name = unquote(urlsplit(url_or_name).path.rstrip("/").rsplit("/", 1)[-1])
        if not name or name in (".", "..") or "\\" in name:
            raise AdminError(f"no file name in {url_or_name!r}")
        answered = await self._ask("POST", f"/admin/purge-file/{quote(name, safe='')}")
        if answered:
            answer = self._check(*answered)
            removed, size = answer["removed"], answer["removed_bytes"]
        else:
            found = remove_cached_file(self.root / "files", name)
            removed, size = [str(p) for p, _ in found], sum(s for _, s in found)
        if not removed:
            self.out.write(f"{name} is not in the cache.\n")
            return 1
        self.out.write(f"Removed {len(removed)} file(s), {human_bytes(size)}:\n")
        for path in removed:
            self.out.write(f"  {path}\n")
        return 0

    # --- verify --------------------------------------------------------------------

    def verify(self, drop: bool) -> int:
        self._require_cache()
        files = verify.cached_files(self.root)
        links = verify.recorded_links(self.root)
        progress = Progress(sys.stderr, "verify", sum(f.size for f in files), len(files))
        good = 0
        bad: list[tuple[verify.Cached, str]] = []
        unknown: list[verify.Cached] = []
        for cached, problem in verify.verify(self.root, files, links, drop=drop, progress=progress.advance):
            if problem is None:
                good += 1
            elif problem == "unknown":
                unknown.append(cached)
            else:
                bad.append((cached, problem))
        progress.finish()
        self.out.write(
            f"Checked {len(files)} files ({human_bytes(progress.done_bytes)}): {good} good, {len(bad)} bad"
            f"{' (deleted)' if drop and bad else ''}, {len(unknown)} with no recorded digest.\n"
        )
        for cached, problem in bad:
            self.out.write(f"  BAD {'/'.join(cached.segments)}: {problem}\n")
        for cached in unknown[:20]:
            self.out.write(f"  no digest known for {'/'.join(cached.segments)} (kept)\n")
        return 1 if bad else 0

    # --- prefetch ------------------------------------------------------------------

    async def prefetch(self, args: argparse.Namespace) -> int:
        if self.url is None:
            raise AdminError("cannot tell the daemon's address from its listen setting: give --url")
        if not args.files and not args.requirement:
            raise AdminError("prefetch what? give lock files, requirements files or -r FILE")
        target = prefetching.Target(tuple(args.platform or ()), args.python)
        try:
            locked, requirements = prefetching.read_locks(list(args.files), target)
        except prefetching.PrefetchError as e:
            raise AdminError(str(e)) from None
        index, jobs = self.url + "/simple/", max(1, args.jobs)
        hosts = prefetching.served_hosts(self.url, self.settings, self.root, sorted({f.project for f in locked}))
        progress = Progress(sys.stderr, "prefetch", 0, len(locked))
        summary = await lockfetch.prefetch_locked(
            self.http, index, locked, hosts, jobs=jobs, headers=self._headers(), on_progress=progress.advance
        )
        progress.finish()
        for path in [*requirements, *(args.requirement or ())]:
            try:
                found = await prefetching.requirements_summary(
                    self.http, index, path, args.all_files, jobs, self._headers()
                )
            except prefetching.PrefetchError as e:
                raise AdminError(str(e)) from None
            summary.extend(found)
        return prefetching.write(summary, args.json, self.out)


async def run(reactor: Any, args: argparse.Namespace, out: TextIO) -> int:
    settings = load(args, sys.stderr)
    token = args.token or os.environ.get("PYPICACHED_ADMIN_TOKEN") or settings.admin_token
    url = (args.url or daemon_url(settings) or "").rstrip("/") or None
    admin = Admin(settings, url, token, treq, out)
    answer = COMMANDS[args.command](admin, args)
    return answer if isinstance(answer, int) else await answer


#: What each command runs: an exit code, or a coroutine of one.
COMMANDS: dict[str, Callable[[Admin, argparse.Namespace], Any]] = {
    "stats": lambda admin, args: admin.stats(args.json),
    "purge": lambda admin, args: admin.purge(args.project),
    "purge-file": lambda admin, args: admin.purge_file(args.url_or_name),
    "policy": lambda admin, args: admin.policy_check(args.requirement),
    "verify": lambda admin, args: admin.verify(drop=not args.keep),
    "prefetch": lambda admin, args: admin.prefetch(args),
    "export": lambda admin, args: carry.export(admin.root, args, admin.out),
    "import": lambda admin, args: carry.import_bundle(admin.root, admin.settings.max_size, args.bundle, admin.out),
    "token": lambda admin, args: tokens.command(admin, args, admin.out),
}


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)

    async def start(reactor: Any) -> None:
        try:
            code = await run(reactor, args, sys.stdout)
        except (AdminError, ConfigError, tokens.TokenError, carry.CarryError) as e:
            sys.stderr.write(f"pypicached-admin: {e}\n")
            code = 2
        if code:
            raise SystemExit(code)

    react(lambda reactor: ensureDeferred(start(reactor)))
