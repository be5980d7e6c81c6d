"""Playback restrictions: which sites may embed a signed stream, and which clients may play it.

A restriction is Mux's (MUX-API.md, Mux's playback-restrictions reference):
- `referrer.allowed_domains`: `[]` admits no site, `["*"]` any site, otherwise up to
  MAX_ALLOWED_DOMAINS host names, each exact (`example.com` admits only `example.com`) or a
  DNS-style wildcard `*.example.com`, which admits every name under `example.com` at any depth
  (rfc4592 2.1.1) and not `example.com` itself; `*` may only be the whole leftmost label.
- `referrer.allow_no_referrer`: whether a request without `Referer` (native apps, TVs,
  `Referrer-Policy: no-referrer` pages) plays.
- `user_agent.allow_no_user_agent` and `allow_high_risk_user_agent`: Mux's list of high-risk
  agents is its own; Relay's is HIGH_RISK_USER_AGENT_MARKERS, scripted HTTP clients that no
  viewer uses.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from relay.logs import peer_text
from relay.playback.tokens import RefusalReason, TokenRefused
from relay.store.records import PlaybackRestriction

#: Most entries in `allowed_domains`, as Mux allows.
MAX_ALLOWED_DOMAINS = 10
#: Longest `allowed_domains` entry: a host name is at most 253 characters (rfc1035 2.3.4).
MAX_DOMAIN_LENGTH = 253
#: Longest `Referer` header read; a longer one is refused (browsers send the page's URL,
#: and from Chrome 85 on only its origin to other sites).
MAX_REFERER_LENGTH = 4096
#: Substrings (lower case) of a `User-Agent` that a restriction refusing high-risk agents
#: refuses: HTTP libraries and download tools that scrape streams, not players.
HIGH_RISK_USER_AGENT_MARKERS = ("curl/", "wget/", "python-requests/", "python-urllib/",
                                "go-http-client/", "libwww-perl/", "scrapy/")

# One host name label (rfc1123 2.1): letters, digits, hyphens, not at either end.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: An `allowed_domains` entry: `*`, a host name, or `*.` and a host name (any case; kept in
#: lower case). The API states it in its OpenAPI document too.
ALLOWED_DOMAIN_PATTERN = rf"^(?:\*|(?:\*\.)?{_LABEL}(?:\.{_LABEL})*)$"
_ALLOWED_DOMAIN = re.compile(ALLOWED_DOMAIN_PATTERN)


def normalize_allowed_domain(entry: str) -> str:
    """The entry as kept (lower case), or ValueError saying what is wrong with it."""
    domain = entry.lower()
    if len(domain) > MAX_DOMAIN_LENGTH:
        raise ValueError(f"an allowed domain is at most {MAX_DOMAIN_LENGTH} characters "
                         f"(got {len(domain)})")
    if _ALLOWED_DOMAIN.fullmatch(domain) is None:
        raise ValueError(
            f"'{peer_text(entry)}' is not a host name, '*.' and a host name, or '*' "
            "(a wildcard is only the whole leftmost label: *.example.com)")
    return domain


def referrer_host(referer: str) -> str | None:
    """The host name of a `Referer` URL, lower case, without a trailing dot; None when the
    header names no host."""
    if len(referer) > MAX_REFERER_LENGTH:
        return None
    try:
        host = urlsplit(referer.strip()).hostname
    except ValueError:
        return None
    host = host.rstrip(".") if host else None
    # An empty label (".example.com", "a..example.com") would pass a suffix match.
    if not host or host.startswith(".") or ".." in host:
        return None
    return host


def domain_allowed(host: str, allowed_domains: tuple[str, ...]) -> bool:
    """Whether a referring `host` (lower case) is admitted by `allowed_domains`."""
    for allowed in allowed_domains:
        if allowed == "*" or allowed == host:
            return True
        if allowed.startswith("*.") and host.endswith(allowed[1:]):
            return True
    return False


def high_risk_user_agent(user_agent: str) -> bool:
    lowered = user_agent.lower()
    return any(marker in lowered for marker in HIGH_RISK_USER_AGENT_MARKERS)


def check_restriction(restriction: PlaybackRestriction, *, referer: str | None,
                      user_agent: str | None) -> None:
    """Raise TokenRefused unless a request with these `Referer` and `User-Agent` headers
    (None when absent) meets `restriction`."""
    if not referer:
        if not restriction.allow_no_referrer:
            raise TokenRefused(RefusalReason.REFERRER_NOT_ALLOWED,
                               "the request has no Referer and the restriction needs one")
    else:
        host = referrer_host(referer)
        if host is None or not domain_allowed(host, restriction.allowed_domains):
            raise TokenRefused(RefusalReason.REFERRER_NOT_ALLOWED,
                               f"'{peer_text(host or referer)}' is not an allowed domain")
    if not user_agent:
        if not restriction.allow_no_user_agent:
            raise TokenRefused(RefusalReason.USER_AGENT_NOT_ALLOWED,
                               "the request has no User-Agent and the restriction needs one")
    elif not restriction.allow_high_risk_user_agent and high_risk_user_agent(user_agent):
        raise TokenRefused(RefusalReason.USER_AGENT_NOT_ALLOWED,
                           "the restriction refuses scripted HTTP clients")
