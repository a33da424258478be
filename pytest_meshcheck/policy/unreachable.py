"""Warn about HTTP rules and matches that can never apply, as istiod's ``analyzeUnreachableHTTPRules`` does.

istiod (``pkg/config/validation/validation.go``) admits such VirtualServices with a warning: a rule after a
rule without matches, a match equal to an earlier one, and a URI-prefix match that an earlier, shorter
prefix already covers (same method, which defaults to GET, and the same headers, query parameters and
withoutHeaders, compared as exact or prefix values).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_meshcheck.policy.reader import Fields, item

_EXACT, _PREFIX = "exact:", "prefix:"


@dataclass(frozen=True)
class _PrefixMatch:
    """``OverlappingMatchValidationForHTTPRoute``: a URI-prefix match reduced to comparable strings."""

    route: str
    match: str
    prefix: str
    method: str
    headers: dict[str, str]
    query: dict[str, str]
    without: dict[str, str]


def _exact_or_prefix(sm: Any) -> str:
    # assignExactOrPrefix: regex and presence matches compare as "".
    if not isinstance(sm, Mapping):
        return ""
    if sm.get("exact"):
        return _EXACT + str(sm["exact"])
    if sm.get("prefix"):
        return _PREFIX + str(sm["prefix"])
    return ""


def _values(raw: Mapping[str, Any], name: str) -> dict[str, str]:
    value = raw.get(name)
    return {str(k): _exact_or_prefix(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _route_name(raw: Mapping[str, Any], index: int) -> str:
    name = raw.get("name")
    return json.dumps(name) if isinstance(name, str) and name else f"#{index}"


def _prefix_match(route: str, raw: Mapping[str, Any], match: str) -> _PrefixMatch | None:
    # genMatchHTTPRoutes: only matches with a non-empty URI prefix take part.
    uri = raw.get("uri")
    prefix = uri.get("prefix") if isinstance(uri, Mapping) else None
    if not isinstance(prefix, str) or not prefix:
        return None
    return _PrefixMatch(
        route=route,
        match=match,
        prefix=prefix,
        method=_exact_or_prefix(raw.get("method")) or _EXACT + "GET",
        headers=_values(raw, "headers"),
        query=_values(raw, "queryParams"),
        without=_values(raw, "withoutHeaders"),
    )


def _map_covered(a: dict[str, str], b: dict[str, str]) -> bool:
    return len(a) == len(b) and all(k in b and (v == b[k] or v.startswith(b[k])) for k, v in a.items())


def _covered(a: _PrefixMatch, b: _PrefixMatch) -> bool:
    # coveredValidation: does the earlier match ``a`` take every request the later ``b`` would?
    if not b.prefix.startswith(a.prefix):
        return False
    if a.method != b.method and not a.method.startswith(b.method):
        return False
    return _map_covered(a.headers, b.headers) and _map_covered(a.query, b.query) and _map_covered(a.without, b.without)


def _canonical(raw: Mapping[str, Any]) -> str:
    # asJSON: the match without its name, so that two matches differing only in name are duplicates.
    return json.dumps({k: v for k, v in raw.items() if k != "name"}, sort_keys=True, default=str)


def warn_unreachable(spec: Fields, http: Sequence[Fields]) -> None:
    """Record istiod's ``VirtualServiceUnreachableRule`` and ``VirtualServiceIneffectiveMatch`` warnings."""
    seen: dict[str, int] = {}
    catch_all = -1
    prefixes: list[_PrefixMatch] = []
    for index, route_f in enumerate(http):
        raw_route = route_f.data
        route = _route_name(raw_route, index)
        path = item(spec.at("http"), index)
        matches = raw_route.get("match")
        matches = [m for m in matches if isinstance(m, Mapping)] if isinstance(matches, list) else []
        first = f"http[{catch_all}] has no match and catches every request first"
        if not matches:
            if catch_all >= 0:
                _unused(spec, path, route, f"only the last rule can have no matches; {first}")
            catch_all = index
            continue
        duplicates = 0
        for n, raw in enumerate(matches):
            match = _route_name(raw, n)
            if catch_all >= 0:
                _unused(spec, path, route, f"route without matches defined before; {first}")
                continue
            key = _canonical(raw)
            if key in seen:
                _ineffective(spec, item(f"{path}.match", n), route, match, _route_name(http[seen[key]].data, seen[key]))
                duplicates += 1
                continue
            seen[key] = index
            found = _prefix_match(route, raw, match)
            if found is not None:
                prefixes.append(found)
        if duplicates == len(matches):
            _unused(spec, path, route, "all matches used by prior rules")
    for i, a in enumerate(prefixes):
        for b in prefixes[i + 1 :]:
            if b.prefix != a.prefix and _covered(a, b):
                _ineffective(
                    spec,
                    spec.at("http"),
                    b.route,
                    f"{b.match} of prefix {b.prefix}",
                    f"{a.match} of prefix {a.prefix} on {a.route}",
                )


def _unused(spec: Fields, path: str, route: str, reason: str) -> None:
    spec.ctx.warn(path, f"virtualService rule {route} not used ({reason})")


def _ineffective(spec: Fields, path: str, route: str, match: str, other: str) -> None:
    spec.ctx.warn(
        path, f"virtualService rule {route} match {match} is not used (duplicate/overlapping match in rule {other})"
    )
