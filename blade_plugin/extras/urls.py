"""URLs as they may be logged or stored: without the credentials a user can put in them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that carry a secret in the wild (Azure's api-key, signed URLs, tokens).
_SECRET_PARAMETERS = ("key", "token", "secret", "password", "sig", "signature", "auth", "credential")


def redact_url(url: str) -> str:
    """`url` without `user:password@` and with secret-looking query values replaced by `***`; anything that is
    not a URL with a host comes back unchanged."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:  # a malformed port or bracket: keep nothing that might hold a secret after the scheme
        return url.split("://", 1)[0] + "://***" if "://" in url else url
    if not host:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret(name) for name, _ in pairs):
            query = urlencode([(name, "***" if _is_secret(name) else value) for name, value in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_PARAMETERS)
