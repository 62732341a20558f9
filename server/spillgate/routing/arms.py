"""Canary arms: which arm of a split route serves a request.

Pure and stable: the arm is a function of the route and an arm key only, so one user (one
API key, or one `x-spillgate-arm-key` the client sends, e.g. a user or session id) always
lands on the same arm while the weights stay the same, and every replica agrees without
sharing state. The key is hashed with the route's name (BLAKE2b, 64 bits) into [0, 1), and
the arms take consecutive slices of that interval in configured order, each as wide as its
share of the total weight.
"""

from __future__ import annotations

import hashlib

from spillgate.routing.router import Route

ARM_KEY_HEADER = "x-spillgate-arm-key"
_SCALE = float(2**64)


def position(route_name: str, arm_key: str) -> float:
    """Where `arm_key` falls in [0, 1) for this route (independent across routes)."""
    digest = hashlib.blake2b(f"{route_name}\x00{arm_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def choose(route: Route, arm_key: str) -> Route:
    """The arm of `route` serving `arm_key`; the route itself when it is not split."""
    if not route.arms:
        return route
    total = sum(weight for _, weight, _ in route.arms)
    point = position(route.name, arm_key) * total
    edge = 0.0
    for _, weight, arm in route.arms:
        edge += weight
        if point < edge:
            return arm
    return route.arms[-1][2]  # float rounding at the very top of the interval
