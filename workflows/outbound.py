"""Where escrowflow may send requests: webhook URLs checked against internal addresses.

A webhook URL comes from outside and the worker calls it, so it must not reach the
platform's own network (SSRF). Checked twice:

- when registered (:func:`check_webhook_url`): http or https, no credentials, no
  control characters or whitespace, a valid host, and no literal internal address in
  any spelling (``127.1``, ``2130706433``, ``0x7f000001``, ``[::ffff:127.0.0.1]``) nor
  ``localhost``;
- when sending (:func:`resolve_public`): the name is resolved and every address checked
  again, and the request then goes to the address checked (a name that re-resolves to an
  internal address between the check and the connection cannot redirect it: DNS
  rebinding).

Internal means loopback, private, link-local, multicast, reserved, unspecified, shared
(100.64/10) and the like: every address that is not globally routable.
``ESCROWFLOW_WEBHOOK_ALLOW_PRIVATE`` lifts the address check for tests and internal
deployments; the syntax checks always apply.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

from storage.errors import ValidationError

MAX_URL_LENGTH = 2000
Resolver = Callable[[str, int], list[str]]


class BlockedAddress(Exception):
    """The webhook's host is an internal address: refused."""


def _invalid(url: str, why: str, code: str = "invalid_url") -> ValidationError:
    shown = url if len(url) <= 200 else url[:200] + "..."
    return ValidationError(f"webhook URL {shown!r} {why}", code=code, details={"field": "url"})


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, in any spelling the resolver would accept."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # inet_aton takes the legacy IPv4 forms: 2130706433, 0x7f000001, 127.1, 0177.0.0.1.
    if all(part and part.strip("0123456789abcdefxABCDEFX") == "" for part in host.split(".")):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_internal(mapped)
    return not address.is_global or address.is_multicast


def _split(url: str) -> SplitResult:
    if not isinstance(url, str) or not url:
        raise _invalid(str(url), "must be an http:// or https:// URL")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(url, f"is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise _invalid(url, "contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise _invalid(url, "is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise _invalid(url, "must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _invalid(url, "must not carry credentials (user@host)")
    host = parts.hostname or ""
    if not host or not all(ch.isalnum() or ch in ".-_:" for ch in host):
        raise _invalid(url, "has no valid host")
    return parts


def check_webhook_url(url: str, *, allow_private: bool) -> str:
    """The URL, if escrowflow may call it; otherwise a ValidationError that says why."""
    parts = _split(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if allow_private:
        return url
    address = _literal_ip(host)
    if address is not None and is_internal(address):
        raise _invalid(url, "points to an internal address", code="url_not_allowed")
    if host == "localhost" or host.endswith(".localhost"):
        raise _invalid(url, "points to an internal address", code="url_not_allowed")
    return url


def system_resolver(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def resolve_public(
    url: str, *, allow_private: bool, resolve: Resolver = system_resolver
) -> tuple[str, str]:
    """At send time: (the URL with its host replaced by the checked address, the original
    host for the Host header and TLS). Raises ValidationError for a URL that is no longer
    valid, OSError for a name that does not resolve, BlockedAddress for an internal one."""
    parts = _split(check_webhook_url(url, allow_private=allow_private))
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    if not addresses:
        raise OSError(f"{host} does not resolve")
    checked = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
    if not allow_private and any(is_internal(a) for a in checked):
        raise BlockedAddress(host)
    first = checked[0]
    literal = f"[{first}]" if first.version == 6 else str(first)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return parts._replace(netloc=netloc).geturl(), parts.netloc
