"""URLs as logs and error messages may show them: without their passwords."""

from __future__ import annotations

import re

# redis-py also reads a password from the query string (`redis://host/0?password=...`).
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with `***` for its password, in the user info or a `password=` parameter.

    The query is redacted first, so an `@` in its password cannot be taken for the end of
    the user info; any `@` left is, even a raw one in a password, so nothing before it shows.
    """
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    # A user name is shown; user info without a colon may be a token, so it is not.
    user, colon, _ = credentials.partition(":")
    return f"{scheme}{sep}{user + ':***' if user and colon else '***'}@{host}"
