"""Shared HTTP client: retries with back-off, credentials, resumable verified downloads.

Every downloader of :mod:`sarssl.acquire` goes through :class:`HttpClient`, so they all
behave the same way on a flaky network or an unhappy server:

- **Retries** on connection errors and on HTTP 429/500/502/503/504, at most ``retries``
  times, waiting ``backoff * 2**attempt`` seconds (capped at ``max_backoff``). A
  ``Retry-After`` header (seconds or an HTTP date) overrides the computed wait (capped at
  ``max_retry_after``), which keeps the client polite to rate-limited services. Jitter is
  either off (``jitter_seed=None``) or drawn from ``random.Random(jitter_seed)``, so a rerun
  waits exactly as long.
- **Credentials** come only from environment variables or a netrc file (``$NETRC`` or
  ``~/.netrc``), never from configuration files (see :class:`Service`). Authorization
  headers are sent only to the hosts a service names (redirects to other hosts do not see
  them). HTTP 401/403 raise :class:`AuthenticationError` naming the service and the
  variables to set.
- **Resumable downloads** into ``NAME.part`` with HTTP ``Range`` requests: an interrupted
  transfer (dropped connection, timeout, killed job) resumes from the bytes already on
  disk. The completed file is verified (size, and MD5/SHA checksum when the catalogue gives
  one) and only then renamed to its final name with :func:`os.replace` (atomic on POSIX),
  so -- as with :func:`sarssl.io.atomic_path` -- a half file never carries the final name. A
  checksum mismatch deletes the bad file and raises :class:`ChecksumError`.
- **One writer per file**: a download holds an exclusive ``fcntl`` lock on ``.NAME.lock``,
  so two processes asking for the same file (parallel Snakemake jobs sharing a DEM tile or
  an orbit file) never append to one ``.part`` together: the second waits, then finds the
  file present and verified.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import http.client
import json
import logging
import netrc
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import __version__
from ..errors import SarsslError

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying: rate limiting and transient server trouble.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Errors raised by a dropped/half-closed connection or a stalled socket.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    urllib.error.URLError,
    http.client.HTTPException,  # IncompleteRead, RemoteDisconnected, BadStatusLine
    ConnectionError,
    socket.timeout,
    TimeoutError,
)
MAX_REDIRECTS = 10


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
class AcquireError(SarsslError):
    """A download or catalogue query failed in a way the user can act on."""


class AuthenticationError(AcquireError):
    """HTTP 401/403: missing or wrong credentials (the message says which to set)."""


class NotFoundError(AcquireError):
    """HTTP 404: the URL (product, tile, orbit file) does not exist."""


class ChecksumError(AcquireError):
    """A downloaded file's size or checksum differs from the catalogue's."""


# ---------------------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """A username/password pair or a bearer token, and where it came from (for messages)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None
    source: str = ""

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Service:
    """A remote service and where its credentials may come from.

    Lookup order: ``token_env`` (a bearer token), then ``user_env`` + ``password_env``, then
    the netrc entry ``machine netrc_host`` in ``$NETRC`` (or ``~/.netrc``).
    """

    name: str
    user_env: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    netrc_host: str | None = None

    def hint(self) -> str:
        """How to provide credentials, for error messages."""
        ways = []
        if self.user_env and self.password_env:
            ways.append(f"set {self.user_env} and {self.password_env}")
        if self.token_env:
            ways.append(f"set {self.token_env} (a bearer token)")
        if self.netrc_host:
            ways.append(
                f"add 'machine {self.netrc_host} login USER password PASS' to ~/.netrc (or $NETRC)"
            )
        return " or ".join(ways) if ways else "no credentials are supported"

    def credentials(self, environ: Mapping[str, str] | None = None) -> Credentials | None:
        """The credentials found, or None."""
        env = os.environ if environ is None else environ
        if self.token_env and env.get(self.token_env):
            return Credentials(token=env[self.token_env], source=f"${self.token_env}")
        if (
            self.user_env
            and self.password_env
            and env.get(self.user_env)
            and env.get(self.password_env)
        ):
            return Credentials(
                username=env[self.user_env],
                password=env[self.password_env],
                source=f"${self.user_env}/${self.password_env}",
            )
        if self.netrc_host:
            path = Path(env.get("NETRC") or Path.home() / ".netrc")
            if path.is_file():
                try:
                    entry = netrc.netrc(str(path)).authenticators(self.netrc_host)
                except (netrc.NetrcParseError, OSError) as exc:
                    raise AcquireError(f"netrc file {path}: cannot be parsed ({exc})") from exc
                if entry and entry[0] and entry[2]:
                    return Credentials(
                        username=entry[0], password=entry[2], source=f"{path} ({self.netrc_host})"
                    )
        return None


class Auth:
    """Adds an ``Authorization`` header to requests for a fixed set of hosts.

    ``scheme`` 'basic' sends username/password (NASA Earthdata Login: only to the URS host);
    'bearer' sends ``token`` (or the one ``token_getter`` fetches, e.g. a CDSE OAuth token).
    ``refresh()`` forgets a fetched token so the next request asks for a new one (expired
    tokens are a normal event on hour-long downloads).
    """

    def __init__(
        self,
        service: Service,
        hosts: Iterable[str],
        credentials: Credentials | None,
        scheme: str = "basic",
        token_getter: Callable[[Credentials], str] | None = None,
    ) -> None:
        self.service = service
        self.hosts = {h.lower() for h in hosts}
        self.credentials = credentials
        self.scheme = scheme
        self.token_getter = token_getter
        self._token: str | None = None

    def applies_to(self, url: str) -> bool:
        return urllib.parse.urlsplit(url).netloc.lower() in self.hosts

    def headers_for(self, url: str) -> dict[str, str]:
        if self.credentials is None or not self.applies_to(url):
            return {}
        if self.credentials.token:
            return {"Authorization": f"Bearer {self.credentials.token}"}
        if self.scheme == "bearer":
            if self._token is None:
                if self.token_getter is None:
                    raise AcquireError(
                        f"{self.service.name}: a bearer token is needed: {self.service.hint()}"
                    )
                self._token = self.token_getter(self.credentials)
            return {"Authorization": f"Bearer {self._token}"}
        return {"Authorization": self.credentials.basic_header()}

    def refresh(self) -> bool:
        """Drop a fetched token; True when a retry may help."""
        if self.scheme == "bearer" and self._token is not None and self.token_getter is not None:
            self._token = None
            return True
        return False


# ---------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Let 3xx responses surface as HTTPError so :class:`HttpClient` follows them itself
    (keeping ``Range`` headers and choosing per host whether to send credentials)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class HttpClient:
    """HTTP with bounded retries, polite back-off, per-host credentials and resumable downloads.

    ``sleep`` is injectable so tests can record waits instead of sleeping.
    """

    service: str = "HTTP"
    auth: Auth | None = None
    retries: int = 5
    backoff: float = 2.0
    max_backoff: float = 120.0
    max_retry_after: float = 600.0
    jitter_seed: int | None = None
    jitter: float = 0.25
    timeout: float = 60.0
    chunk_size: int = 1 << 20
    progress: bool = True
    sleep: Callable[[float], None] = time.sleep
    user_agent: str = f"sarssl/{__version__} (+python urllib)"
    waits: list[float] = field(default_factory=list)  # every back-off wait, for logs/tests

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise SarsslError(f"retries={self.retries}: must be >= 0")
        self._rng = random.Random(self.jitter_seed) if self.jitter_seed is not None else None
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect()
        )

    # -- waits ---------------------------------------------------------------------------
    def _wait(self, attempt: int, retry_after: float | None, why: str, url: str) -> None:
        if retry_after is not None:
            delay = min(retry_after, self.max_retry_after)
        else:
            delay = min(self.backoff * (2.0**attempt), self.max_backoff)
            if self._rng is not None:
                delay *= 1.0 + self.jitter * self._rng.random()
        log.warning(
            "%s: %s for %s; retry %d/%d in %.1f s",
            self.service,
            why,
            url,
            attempt + 1,
            self.retries,
            delay,
        )
        self.waits.append(delay)
        if delay > 0:
            self.sleep(delay)

    # -- requests ------------------------------------------------------------------------
    def open(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        what: str | None = None,
        ok_statuses: Iterable[int] = (),
    ) -> http.client.HTTPResponse:
        """Send a request, following redirects and retrying transient failures.

        Returns the open response (2xx, or a status in ``ok_statuses``); raises
        :class:`AuthenticationError` (401/403), :class:`NotFoundError` (404) or
        :class:`AcquireError` (anything else, or retries exhausted).
        """
        what = what or url
        ok = set(ok_statuses)
        refreshed = False
        attempt = 0
        while True:
            try:
                return self._open_following(url, method, headers or {}, data, ok)
            except urllib.error.HTTPError as exc:
                status = exc.code
                body = _safe_body(exc)
                exc.close()
                if status in (401, 403):
                    if self.auth is not None and not refreshed and self.auth.refresh():
                        refreshed = True
                        continue
                    raise self._auth_error(status, what, body) from None
                if status == 404:
                    raise NotFoundError(
                        f"{self.service}: {what} not found (HTTP 404 for {exc.url or url})"
                    ) from None
                if status in RETRY_STATUSES and attempt < self.retries:
                    self._wait(
                        attempt,
                        parse_retry_after(exc.headers.get("Retry-After")),
                        f"HTTP {status}",
                        url,
                    )
                    attempt += 1
                    continue
                raise AcquireError(
                    f"{self.service}: {what}: HTTP {status} {exc.reason} from {exc.url or url}"
                    + (f" after {attempt} retries" if attempt else "")
                    + (f": {body}" if body else "")
                ) from None
            except TRANSIENT_ERRORS as exc:
                if attempt < self.retries:
                    self._wait(attempt, None, f"{type(exc).__name__}: {exc}", url)
                    attempt += 1
                    continue
                raise AcquireError(
                    f"{self.service}: {what}: cannot reach {url} after {attempt} retries ({exc})"
                ) from exc

    def _auth_error(self, status: int, what: str, body: str) -> AuthenticationError:
        if self.auth is None:
            return AuthenticationError(
                f"{self.service}: {what}: access denied (HTTP {status}) "
                "and no credentials are configured for this service"
            )
        creds = self.auth.credentials
        have = (
            f"the credentials from {creds.source} were rejected"
            if creds
            else "no credentials were found"
        )
        return AuthenticationError(
            f"{self.auth.service.name}: {what}: HTTP {status}, {have}: {self.auth.service.hint()}"
            + (f" (server said: {body})" if body else "")
        )

    def _open_following(
        self, url: str, method: str, headers: Mapping[str, str], data: bytes | None, ok: set[int]
    ) -> http.client.HTTPResponse:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            hdrs = {"User-Agent": self.user_agent, **headers}
            if self.auth is not None:
                hdrs.update(self.auth.headers_for(current))
            req = urllib.request.Request(current, data=data, headers=hdrs, method=method)
            try:
                return self._opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                if exc.code in ok:
                    return exc  # an HTTPError is also a readable response
                if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                    nxt = urllib.parse.urljoin(current, exc.headers["Location"])
                    exc.close()
                    log.debug("redirect %d: %s -> %s", exc.code, current, nxt)
                    if exc.code == 303 or (exc.code in (301, 302) and method == "POST"):
                        method, data = "GET", None
                    current = nxt
                    continue
                raise
        raise AcquireError(f"{self.service}: more than {MAX_REDIRECTS} redirects from {url}")

    def get_bytes(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        what: str | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        method: str = "GET",
    ) -> bytes:
        """The whole body of a (small) response, retried as a unit when the body breaks."""
        full = with_params(url, params)
        attempt = 0
        while True:
            resp = self.open(full, what=what, headers=headers, data=data, method=method)
            try:
                return resp.read()
            except TRANSIENT_ERRORS as exc:
                if attempt >= self.retries:
                    raise AcquireError(
                        f"{self.service}: {what or full}: body broke off ({exc})"
                    ) from exc
                self._wait(attempt, None, f"{type(exc).__name__}", full)
                attempt += 1
            finally:
                resp.close()

    def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        what: str | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        method: str = "GET",
    ) -> Any:
        raw = self.get_bytes(
            url, params=params, what=what, headers=headers, data=data, method=method
        )
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise AcquireError(
                f"{self.service}: {what or url}: response is not JSON ({raw[:200]!r})"
            ) from exc

    # -- downloads -----------------------------------------------------------------------
    def download(
        self,
        url: str,
        dest: str | os.PathLike,
        *,
        size: int | None = None,
        checksum: tuple[str, str] | None = None,
        what: str | None = None,
        verify_existing: bool = False,
    ) -> Path:
        """Download ``url`` to ``dest`` (resuming ``dest.part``), verify, rename atomically.

        ``size``: expected bytes; ``checksum``: ``(algorithm, hexdigest)`` with any
        :mod:`hashlib` algorithm ('md5', 'sha1', 'sha256', ...). An existing ``dest`` of the
        right size is kept (and re-hashed when ``verify_existing``). Returns ``dest``.
        """
        dest = Path(dest)
        what = what or dest.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(dest.with_name(f".{dest.name}.lock"), what):
            return self._download_locked(
                url, dest, size=size, checksum=checksum, what=what, verify_existing=verify_existing
            )

    def _download_locked(
        self,
        url: str,
        dest: Path,
        *,
        size: int | None,
        checksum: tuple[str, str] | None,
        what: str,
        verify_existing: bool,
    ) -> Path:
        if checksum is not None:
            algo = checksum[0].lower().replace("-", "")
            if algo not in hashlib.algorithms_available:
                log.warning(
                    "%s: checksum algorithm %s not available: verifying size only",
                    what,
                    checksum[0],
                )
                checksum = None
            else:
                checksum = (algo, checksum[1].lower())
        if dest.exists():
            if (size is None or dest.stat().st_size == size) and (
                not verify_existing
                or checksum is None
                or file_digest(dest, checksum[0]) == checksum[1]
            ):
                log.info("%s: already present (%s)", what, dest)
                return dest
            log.warning("%s: existing %s fails verification: downloading again", what, dest)
            dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        total = self._fetch_to_part(url, part, size, what)
        self._verify(part, dest, total, size, checksum, what, url)
        os.replace(part, dest)
        log.info("%s: downloaded %s (%d bytes)", what, dest, dest.stat().st_size)
        return dest

    def _fetch_to_part(self, url: str, part: Path, size: int | None, what: str) -> int | None:
        """Fill ``part`` with the whole body; returns the server's total size (if known)."""
        attempt = 0
        restarts = 0
        total = size
        while True:
            if restarts > 2:
                raise AcquireError(
                    f"{self.service}: {what}: {url} keeps refusing to resume; {part} deleted"
                )
            have = part.stat().st_size if part.exists() else 0
            if total is not None and have == total:
                return total
            if total is not None and have > total:
                log.warning(
                    "%s: %s is larger than the expected %d bytes: restarting", what, part, total
                )
                part.unlink()
                have = 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            resp = self.open(url, headers=headers, what=what, ok_statuses=(416,))
            try:
                status = resp.status
                if status == 416:
                    # Nothing left to send: the part may already be complete.
                    server_total = _content_range_total(resp.headers.get("Content-Range"))
                    if server_total is not None and server_total == have:
                        return have
                    log.warning("%s: server refused to resume at byte %d: restarting", what, have)
                    part.unlink(missing_ok=True)
                    restarts += 1
                    continue
                if status == 206:
                    start, server_total = _parse_content_range(resp.headers.get("Content-Range"))
                    if start != have:
                        log.warning(
                            "%s: server resumed at byte %s, not %d: restarting", what, start, have
                        )
                        part.unlink(missing_ok=True)
                        restarts += 1
                        continue
                    mode = "ab"
                else:  # 200: the whole body (server ignored Range, or a fresh start)
                    if have:
                        log.info("%s: server does not support ranges: restarting from byte 0", what)
                    have = 0
                    length = resp.headers.get("Content-Length")
                    server_total = int(length) if length and length.isdigit() else None
                    mode = "wb"
                if server_total is not None:
                    if size is not None and server_total != size:
                        raise ChecksumError(
                            f"{self.service}: {what}: server reports {server_total} bytes, "
                            f"the catalogue {size} ({url})"
                        )
                    total = server_total
                if have:
                    log.info(
                        "%s: resuming at byte %d of %s",
                        what,
                        have,
                        total if total is not None else "?",
                    )
                with (
                    open(part, mode) as fh,
                    tqdm(
                        total=total,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=what[:40],
                        disable=not self.progress,
                        leave=False,
                    ) as bar,
                ):
                    while True:
                        chunk = resp.read(self.chunk_size)
                        if not chunk:
                            break
                        fh.write(chunk)
                        bar.update(len(chunk))
                got = part.stat().st_size
                if total is not None and got < total:
                    raise http.client.IncompleteRead(b"", total - got)
                return total
            except TRANSIENT_ERRORS as exc:
                if attempt >= self.retries:
                    raise AcquireError(
                        f"{self.service}: {what}: transfer from {url} kept breaking off "
                        f"after {attempt} retries; "
                        f"{part} is kept and the next run resumes it ({exc!r})"
                    ) from exc
                self._wait(attempt, None, f"transfer interrupted ({type(exc).__name__})", url)
                attempt += 1
            finally:
                resp.close()

    def _verify(
        self,
        part: Path,
        dest: Path,
        total: int | None,
        size: int | None,
        checksum: tuple[str, str] | None,
        what: str,
        url: str,
    ) -> None:
        got = part.stat().st_size
        expect = size if size is not None else total
        if expect is not None and got != expect:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{self.service}: {what}: got {got} bytes, expected {expect} ({url}); file deleted"
            )
        if checksum is not None:
            digest = file_digest(part, checksum[0])
            if digest != checksum[1]:
                part.unlink(missing_ok=True)
                raise ChecksumError(
                    f"{self.service}: {what}: {checksum[0]} checksum mismatch for {dest.name} "
                    f"from {url}: "
                    f"got {digest}, catalogue says {checksum[1]}; the bad file was deleted"
                )


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _file_lock(path: Path, what: str):
    """Exclusive advisory lock on ``path`` for the duration, logging when another process
    holds it. The holder removes the lock file when done; a waiter that then wakes up on
    the removed file (its inode no longer at ``path``) retries on the new one, so no two
    processes ever hold "the" lock at once. A killed holder leaves at most an unlocked
    file, which the next download takes over."""
    import fcntl

    while True:
        fh = open(path, "a+b")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another process is downloading it: waiting for it to finish", what)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fh.close()  # releases the lock


def with_params(url: str, params: Mapping[str, Any] | None) -> str:
    """``url`` with ``params`` appended as a query string (None values dropped)."""
    if not params:
        return url
    query = urllib.parse.urlencode(
        {k: v for k, v in params.items() if v is not None}, safe=",()$' :/"
    )
    return url + ("&" if "?" in url else "?") + query


def file_digest(path: str | os.PathLike, algorithm: str, chunk: int = 1 << 22) -> str:
    """Hex digest of a file (streamed)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _safe_body(exc: urllib.error.HTTPError, limit: int = 300) -> str:
    try:
        text = exc.read(limit).decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - an unreadable error body must not mask the error
        return ""
    return " ".join(text.split())


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); unknown parts -> None."""
    if not value or not value.startswith("bytes "):
        return None, None
    spec = value[6:]
    rng, _, tot = spec.partition("/")
    start = rng.split("-", 1)[0]
    return (int(start) if start.isdigit() else None), (int(tot) if tot.isdigit() else None)


def _content_range_total(value: str | None) -> int | None:
    return _parse_content_range(value)[1] if value else None
