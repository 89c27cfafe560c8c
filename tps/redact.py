"""Feed URLs as TPS shows and logs them: without credentials or query values.

A feed URL may carry secrets - ``ws://user:password@host/``, ``?apikey=...``. The full
URL stays where TPS needs it (the configuration, the registry file, the reader's
connect); everywhere a URL is *shown* (REST, GraphQL ``streams { url }``, the CLI,
/health, logs, error messages) it goes through :func:`redact_url` first.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with its user info replaced by ``***`` and every query value by ``***``
    (parameter names stay, so an operator can tell which were sent); no fragment.

    ``ws://u:p@h:1/x?apikey=s&v=2#f`` -> ``ws://***@h:1/x?apikey=***&v=***``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be parsed)"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = ""
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if pairs:
            query = "&".join(f"{quote(name, safe='')}={REDACTED}" for name, _ in pairs)
        else:
            query = REDACTED
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
