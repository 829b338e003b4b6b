"""
The daemon's own certificate from an ACME CA, kept current: checked at start and
at least daily on the injected clock, renewed 30 days before it expires, handed
to the ``ssl:`` listeners' reload path (open connections keep theirs). A failed
order keeps the certificate being served, is logged and shown on ``/stats``, and
is tried again after a delay that doubles up to a day.
"""

from __future__ import annotations

import datetime
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger

from pypicached.base.disk import RunInThread
from pypicached.http.acme import AcmeFiles, Challenges, Facts
from pypicached.http.acmeclient import issue
from pypicached.http.tls import ReloadableContext

log = Logger()

DAY = 86400.0
#: Renew this long before the certificate expires.
RENEW_BEFORE = 30 * DAY
#: The least time between a successful order and the next check.
AFTER_SUCCESS = 3600.0
#: The first retry after a failed order; each failure doubles it, up to a day.
RETRY_FIRST = 60.0


class CertificateKeeper(Service):
    """Gets the certificate the first time, renews it when due, and says how it stands."""

    name = "acme certificate"

    def __init__(
        self,
        *,
        reactor: Any,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        files: AcmeFiles,
        directory: str,
        domains: tuple[str, ...],
        email: str | None,
        verify: bool | str = True,
    ) -> None:
        self._reactor, self._clock, self._run = reactor, clock, run_in_thread
        self.files, self.directory, self.domains, self.email = files, directory, domains, email
        self._verify = verify
        self.challenges = Challenges()
        #: The listeners' contexts that serve this certificate, reloaded after each renewal.
        self.contexts: list[ReloadableContext] = []
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.renewed_at: float | None = None
        self._next: IDelayedCall | None = None
        self._under_way: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._schedule(0)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        return self._under_way  # an order under way finishes (it is bounded by its deadline)

    def due(self, facts: Facts | None) -> bool:
        """Whether to order a certificate now: none, the placeholder, other names, or expiring within 30 days."""
        if facts is None or facts.self_signed or set(facts.domains) != set(self.domains):
            return True
        return facts.renews_at(RENEW_BEFORE) <= self._clock.seconds()

    def check(self) -> Deferred[None]:
        """Order a certificate if one is due (at most one order at a time); fires when done."""
        if self._under_way is not None:
            return self._under_way
        d = ensureDeferred(self._check())
        if not d.called:  # nothing to order finishes at once, and must not be kept as under way
            self._under_way = d
        return d

    async def _check(self) -> None:
        try:
            facts = self.files.facts()
            if self.due(facts):
                await self._renew()
                facts = self.files.facts()
            self.failures, self.last_error = 0, None
            # at least daily, and never back to back: a certificate that is due at once after an order
            # (the CA's lifetime too short for the rule) is asked for again an hour later, not in a loop
            until = DAY if facts is None else facts.renews_at(RENEW_BEFORE) - self._clock.seconds()
            self._after(max(AFTER_SUCCESS, min(DAY, until)))
        except Exception as e:
            self.failures += 1
            self.last_error, self.last_error_at = f"{type(e).__name__}: {e}", self._clock.seconds()
            retry = min(DAY, RETRY_FIRST * 2 ** (self.failures - 1))
            log.error(
                "ACME certificate for {domains} not renewed, keeping the current one; retrying in {retry:g}s: {e}",
                domains=", ".join(self.domains),
                retry=retry,
                e=self.last_error,
            )
            self._after(retry)
        finally:
            self._under_way = None

    async def _renew(self) -> None:
        key, chain = await self._run(
            issue,
            directory=self.directory,
            domains=self.domains,
            email=self.email,
            account=self.files.account_key,
            publish=lambda token, value: blockingCallFromThread(self._reactor, self.challenges.put, token, value),
            withdraw=lambda token: blockingCallFromThread(self._reactor, self.challenges.drop, token),
            verify=self._verify,
        )
        await self._run(self.files.write, key, chain)
        for context in self.contexts:
            if not context.reload():
                raise RuntimeError("the new certificate could not be loaded; see the log")
        self.renewed_at = self._clock.seconds()
        log.info("ACME certificate for {domains} issued by {ca}", domains=", ".join(self.domains), ca=self.directory)

    def _after(self, delay: float) -> None:
        if self.running:
            self._schedule(max(0.0, delay))

    def _schedule(self, delay: float) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = self._clock.callLater(delay, self.check)

    def state(self) -> dict[str, Any]:
        """How the certificate stands, for ``/stats`` and the status page."""
        facts = self.files.facts()
        return {
            "domains": list(self.domains),
            "ca": self.directory,
            "not_after": _iso(facts.not_after if facts else None),
            "placeholder": facts is None or facts.self_signed,
            "renews_at": _iso(facts.renews_at(RENEW_BEFORE) if facts and not facts.self_signed else None),
            "renewed_at": _iso(self.renewed_at),
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="seconds")
