"""Retrying an HTTP transfer: the policy, which failures are worth retrying, the back-off.

Step 3 of :mod:`channel_ssl.data.download`. A :class:`Retrier` waits with the clock, sleep and
jitter it is given, so that the download's own (which tests replace) are the only ones used.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import ssl
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger("channel_ssl.download")

# HTTP statuses that say "try again later"; every other error status is final.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long a file or the record listing is retried (:mod:`channel_ssl.data.download`, step 3).

    Attributes:
        max_retries: failed attempts in a row (without a byte arriving) before giving up.
        budget: seconds from the first failure (again from the last byte received) within
            which retries are made; a wait that would end past it is not started.
        base_delay: first back-off step in seconds; each further failure doubles it.
        max_delay: largest back-off step in seconds.
        retry_after_cap: largest ``Retry-After`` honoured, in seconds.
        timeout: seconds a connection may stay silent before the attempt counts as failed.
    """

    max_retries: int = 10
    budget: float = 600.0
    base_delay: float = 1.0
    max_delay: float = 60.0
    retry_after_cap: float = 300.0
    timeout: float = 60.0


class Transient(Exception):
    """An attempt that failed in a way worth retrying (``retry_after`` in seconds or None)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Retrier:
    """Counts failures of one file (or listing) and waits before its next attempt."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float], sleep, jitter):
        self.policy = policy
        self.clock, self.sleep, self.jitter = clock, sleep, jitter
        self.failures = 0  # in a row, since the last byte arrived
        self.attempts = 0  # all failed attempts
        self.since: float | None = None  # clock at the first failure since the last byte

    def progressed(self) -> None:
        self.failures = 0
        self.since = None

    def delay(self, retry_after: float | None) -> float:
        p = self.policy
        step = min(p.max_delay, p.base_delay * 2 ** (self.failures - 1))
        delay = step * (0.5 + 0.5 * self.jitter())
        if retry_after is not None:
            delay = max(delay, min(retry_after, p.retry_after_cap))
        return delay

    def wait(self, transient: Transient) -> str | None:
        """Sleep before the next attempt; return why not instead when the policy is spent."""
        p = self.policy
        now = self.clock()
        if self.since is None:
            self.since = now
        self.failures += 1
        self.attempts += 1
        spent = now - self.since
        if self.failures > p.max_retries:
            return (
                f"gave up after {self.failures} failed attempts in a row "
                f"(--max-retries {p.max_retries}); last error: {transient.reason}"
            )
        delay = self.delay(transient.retry_after)
        if spent + delay > p.budget:
            return (
                f"gave up after {self.attempts} failed attempt(s) over {spent:.0f} s: the next wait "
                f"({delay:.0f} s) would pass the retry budget (--retry-budget {p.budget:g}); "
                f"last error: {transient.reason}"
            )
        log.warning(
            "%s; retrying in %.1f s (failure %d of at most %d in a row)",
            transient.reason,
            delay,
            self.failures,
            p.max_retries,
        )
        self.sleep(delay)
        return None


def retry_after_of(headers) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    value = (headers.get("Retry-After") if headers is not None else None) or ""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def transient_of(exc: BaseException) -> Transient | None:
    """The retryable reading of ``exc``, or None if retrying cannot help."""
    if isinstance(exc, Transient):
        return exc
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code in RETRY_STATUSES:
            return Transient(f"HTTP {exc.code} {exc.reason}", retry_after_of(exc.headers))
        return None
    if isinstance(exc, urllib.error.URLError):
        # socket-level reasons (refused, reset, DNS, timeout) pass; 'unknown url type' does not
        if isinstance(exc.reason, OSError):
            return Transient(f"{exc.reason}")
        return None
    if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException)):
        return Transient(f"{type(exc).__name__}: {exc}".rstrip(": "))
    return None


def close_error(exc: BaseException) -> None:
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
