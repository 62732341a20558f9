"""Email addresses: written plainly (anchored on each "@") or spelled out ("jane at example
dot org", "jane [at] example [dot] org")."""

from __future__ import annotations

import re

from spillgate.routing.sensitivity_rules import CompiledRules


def find_email(rules: CompiledRules, text: str) -> bool:
    """Anchor on each '@' and read the local part backwards, the domain forwards.

    Scanning only around '@' keeps the cost proportional to the number of '@' signs rather
    than trying a local-part pattern at every word of the text.
    """
    at = text.find("@")
    while at != -1:
        local = rules.email_local.search(text, max(0, at - 64), at)
        domain = rules.email_domain.match(text, at + 1)
        if local and domain and not _asset_suffix(domain.group()) and not _url_userinfo(text, at):
            return True
        at = text.find("@", at + 1)
    return False


_TLDS = frozenset(
    {"com", "org", "net", "edu", "gov", "mil", "int", "io", "co", "uk", "de", "fr", "es", "it",
     "nl", "pl", "be", "ch", "at", "se", "no", "dk", "fi", "ie", "pt", "cz", "ru", "eu", "us",
     "ca", "au", "nz", "in", "jp", "cn", "kr", "br", "mx", "ar", "za", "info", "biz", "me",
     "tv", "ai", "dev", "app", "xyz", "online", "site", "email", "mail"}
)
_SPELLED_DOT = re.compile(r" *[(\[{<]dot[)\]}>] *| +dot +|\.", re.IGNORECASE)
# Prose reads "meet at the dot com office"; only an article is taken as prose, and only with a
# plain " at " (a bracketed "[at]" is never prose). "aa at their dot com" is an address.
_NOT_A_DOMAIN = frozenset({"the", "a", "an"})


def find_spelled_email(rules: CompiledRules, text: str) -> bool:
    """ "jane at example dot org", "jane [at] example [dot] org", "jane (at) example.org".

    A plain " at " needs a spelled " dot " after it (so "look at example.com" is prose); the
    last label must be a common top-level domain."""
    for at in rules.spelled_at.finditer(text):
        domain = rules.spelled_domain.match(text, at.end())
        if domain is None:
            continue
        labels = _SPELLED_DOT.split(domain.group())
        bracketed_at = any(ch in at.group() for ch in "([{<")
        spelled_dot = len(labels) - 1 > domain.group().count(".")
        if (
            (bracketed_at or spelled_dot)
            and labels[-1].lower() in _TLDS
            and (bracketed_at or labels[0].lower() not in _NOT_A_DOMAIN)
        ):
            return True
    return False


def _url_userinfo(text: str, at: int) -> bool:
    """`scheme://user:pass@host`: the secret rule owns it; `?to=a@b.com` stays an email."""
    scheme = text.rfind("://", max(0, at - 128), at)
    if scheme == -1:
        return False
    userinfo = text[scheme + 3 : at]
    return not any(ch in userinfo for ch in "/?#=& \t\n")


def _asset_suffix(domain: str) -> bool:
    """`icon@2x.png`: a retina asset name, not a mailbox."""
    head = domain.split(".", 1)[0].lower()
    return head[:-1].isdigit() and head.endswith("x")
