"""Credentials out of logdir URLs, for everything a person or a file name gets to see.

A logdir URL may carry a password (``ftp://user:pw@host/run``), a key in its user
part (``s3://key:secret@bucket/run``) or a signed token in its query
(``https://host/run?sig=...``, ``X-Amz-Signature=``, ``token=``). The writer keeps
the URL as given, because the store needs it; every message, repr, log record, stats
entry and spool-folder name derived from it is built from :func:`redact_url`
instead, and text that came from elsewhere (a store client's exception may quote the
URL) goes through :func:`scrub` or :func:`scrub_exception`.

What is masked, as ``***``:

* the password of the user part (``user:***@host``); a user part without a
  password is masked whole (``***@host``), as pip does: a lone token often sits
  there. A password with an unescaped ``/`` (AWS secret keys have them) is masked
  up to the last ``@`` before the query;
* the value of *every* query parameter (``?sig=***&sv=***``): no list of names
  knows every store's secret parameters.

Scheme, host, port, path and parameter names stay readable. Each part of a chained
URL (``simplecache::s3://...``) is masked on its own.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

__all__ = ["MASK", "redact_url", "scrub", "scrub_exception", "secrets_of"]

MASK = "***"

_AUTHORITY_END = re.compile(r"[/?#]")


def _split(part: str) -> tuple[str, str, str, str, str] | None:
    """``(scheme://, userinfo, host, path, query-and-fragment)`` of one URL, or None.

    ``userinfo`` is empty when there is none.
    """
    scheme, sep, rest = part.partition("://")
    if not sep:
        return None
    query_at = len(rest)
    for mark in ("?", "#"):
        at = rest.find(mark)
        if at != -1:
            query_at = min(query_at, at)
    before_query, query = rest[:query_at], rest[query_at:]
    end = _AUTHORITY_END.search(before_query)
    authority = before_query[: end.start()] if end else before_query
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        path = before_query[len(authority) :]
    elif ":" in authority and "@" in before_query:
        # ``key:abc/def@bucket``: a password with an unescaped slash. Better to
        # mask a little too much of an odd URL than to show a secret.
        userinfo, tail = before_query.rsplit("@", 1)
        end = _AUTHORITY_END.search(tail)
        host, path = (tail[: end.start()], tail[end.start() :]) if end else (tail, "")
    else:
        userinfo, host, path = "", authority, before_query[len(authority) :]
    return scheme + sep, userinfo, host, path, query


def _masked_query(query: str) -> str:
    if not query.startswith("?"):
        return query  # a fragment alone
    body, hash_sign, fragment = query[1:].partition("#")
    items = []
    for item in body.split("&"):
        name, equals, _ = item.partition("=")
        items.append(f"{name}={MASK}" if equals else (MASK if item else item))
    return "?" + "&".join(items) + hash_sign + fragment


def _redact_one(part: str) -> str:
    split = _split(part)
    if split is None:
        return part
    scheme, userinfo, host, path, query = split
    if userinfo:
        user, colon, _ = userinfo.partition(":")
        host = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    return scheme + host + path + _masked_query(query)


def redact_url(url: str) -> str:
    """``url`` with its password and query values replaced by ``***``.

    A plain path (no ``://``) comes back unchanged.
    """
    return "::".join(_redact_one(part) for part in url.split("::"))


def secrets_of(url: str) -> list[str]:
    """The secret pieces of ``url`` (as written and percent-decoded), longest first."""
    found: set[str] = set()
    for part in url.split("::"):
        split = _split(part)
        if split is None:
            continue
        _, userinfo, _, _, query = split
        if userinfo:
            user, colon, password = userinfo.partition(":")
            found.add(password if colon else user)
        if query.startswith("?"):
            for item in query[1:].partition("#")[0].split("&"):
                name, equals, value = item.partition("=")
                found.add(value if equals else name)
    found.update(
        [urllib.parse.unquote(s) for s in found] + [urllib.parse.unquote_plus(s) for s in found]
    )
    found.discard("")
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every piece of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def scrub_exception(exc: BaseException, secrets: Iterable[str]) -> BaseException:
    """``exc`` itself if no secret shows in it, else a copy of it without them.

    The copy has the same type where its constructor allows (else ``OSError``),
    scrubbed arguments, and no cause or context: the original, which quotes the
    secret, is dropped, not chained.
    """
    secrets = [s for s in secrets if s]
    shown = [repr(exc), str(exc)] + [str(getattr(exc, a, "")) for a in ("filename", "filename2")]
    if not any(secret in text for secret in secrets for text in shown):
        return exc

    def clean(value: object) -> object:
        return scrub(value, secrets) if isinstance(value, str) else value

    copy: BaseException
    try:
        if isinstance(exc, OSError) and exc.errno is not None:
            copy = type(exc)(
                exc.errno,
                clean(exc.strerror),
                *(clean(name) for name in (exc.filename, exc.filename2) if name is not None),
            )
        else:
            copy = type(exc)(*(clean(arg) for arg in exc.args))
    except Exception:  # noqa: BLE001 - a constructor with other arguments
        copy = OSError(scrub(f"{type(exc).__name__}: {exc}", secrets))
    if any(secret in text for secret in secrets for text in (repr(copy), str(copy))):
        copy = OSError(scrub(f"{type(exc).__name__}: {exc}", secrets))
    return copy
