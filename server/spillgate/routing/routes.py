"""Build the route table from the configuration, validating it once at start-up.

A client's `model` resolves to a route:
- a configured route (aliases such as `auto` and `local`, or any name the operator chose);
- a local model's served name (policy local);
- a paid model `<provider>/<model>` offered by a configured provider (policy api).
When the operator configures no `local`/`auto` routes, they are derived: `local` serves the
first local model; `auto` prefers it and spills to the first paid model, if any.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from spillgate.catalog import Catalog
from spillgate.errors import ConfigError, ModelNotFound
from spillgate.routing.cascade import CascadeRule
from spillgate.routing.learned import Dispatcher
from spillgate.routing.router import Route, Target
from spillgate.settings import RouteSettings, Settings


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = {r.name: r for r in routes}

    def resolve(self, model: str) -> Route:
        try:
            return self._routes[model]
        except KeyError:
            raise ModelNotFound(
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._routes)

    def all(self) -> list[Route]:
        return list(self._routes.values())

    def paid_models(self) -> set[str]:
        """Every `<provider>/<model>` some route may call (each needs a price)."""
        return {f"{t.backend}/{t.model}" for r in self._routes.values() for t in r.paid}


def build_routes(settings: Settings, catalog: Catalog,
                 dispatchers: Mapping[str, Dispatcher] | None = None) -> RouteTable:
    """`dispatchers`: the learned dispatcher of each route that names a `router`
    (spillgate.learned_file.load_dispatchers reads them)."""
    local_targets = _local_targets(settings, catalog)
    paid_targets = _paid_targets(settings, catalog)
    routes: dict[str, Route] = {}
    for name, target in local_targets.items():
        routes[name] = Route(name, "local", target, ())
    for name, target in paid_targets.items():
        routes[name] = Route(name, "api", None, (target,))
    configured = list(settings.routes) or _default_routes(local_targets, paid_targets)
    for rs in configured:
        routes[rs.name] = _configured_route(rs, local_targets, paid_targets)
        if rs.router is not None:
            if dispatchers is None or rs.name not in dispatchers:
                raise ConfigError(f"routes.{rs.name}.router: the router was not loaded")
            routes[rs.name] = replace(routes[rs.name], dispatcher=dispatchers[rs.name])
    return RouteTable(routes.values())


LOCAL_DEADLINE_SHARE = 0.6  # of the TTFT objective: the paid API's first token needs the rest


def _local_targets(settings: Settings, catalog: Catalog) -> dict[str, Target]:
    targets = {}
    for backend in settings.local:
        model = catalog.local_model(backend.model)
        context = min(model.context_length, backend.n_ctx) if backend.engine == "llamacpp" \
            else model.context_length
        targets[backend.model] = Target(backend.name, backend.model, "local", context)
    return targets


def _paid_targets(settings: Settings, catalog: Catalog) -> dict[str, Target]:
    targets = {}
    for provider in settings.providers:
        for model in provider.models:
            model_id = f"{provider.name}/{model}"
            targets[model_id] = Target(
                provider.name, model, "api", catalog.context_length(model_id)
            )
    return targets


def _default_routes(
    local: dict[str, Target], paid: dict[str, Target]
) -> list[RouteSettings]:
    if not local:
        return []
    first_local = next(iter(local))
    first_paid = next(iter(paid), None)
    defaults = [RouteSettings(name="local", policy="local", local=first_local)]
    if first_paid:
        defaults.append(
            RouteSettings(name="auto", policy="auto", local=first_local, paid=first_paid)
        )
    else:
        defaults.append(RouteSettings(name="auto", policy="local", local=first_local))
    return defaults


def _configured_route(
    rs: RouteSettings, local: dict[str, Target], paid: dict[str, Target]
) -> Route:
    route = _single_route(rs, local, paid)
    arms = tuple((arm.name, arm.weight, replace(_single_route(rs.arm_settings(arm), local, paid),
                                                 arm=arm.name)) for arm in rs.arms)
    return replace(route, arms=arms) if arms else route


def _single_route(
    rs: RouteSettings, local: dict[str, Target], paid: dict[str, Target]
) -> Route:
    local_target = None
    if rs.local is not None:
        if rs.local not in local:
            raise ConfigError(f"routes.{rs.name}.local: no local backend serves {rs.local!r}")
        local_target = local[rs.local]
    chain = [m for m in (rs.paid, *rs.fallbacks) if m]
    if len(set(chain)) != len(chain) or rs.name in chain:
        raise ConfigError(f"routes.{rs.name}.fallbacks: the chain repeats a model (a cycle)")
    for model in chain:
        if model not in paid:
            raise ConfigError(
                f"routes.{rs.name}: paid model {model!r} is not offered by any configured "
                "provider (providers[].models)"
            )
    return Route(
        name=rs.name,
        policy=rs.policy,
        local=local_target,
        paid=tuple(paid[m] for m in chain),
        local_only=rs.local_only,
        on_budget_exhausted=rs.on_budget_exhausted,
        ttft_slo_s=rs.ttft_slo_ms / 1000.0,
        local_deadline_s=(rs.local_deadline_ms or LOCAL_DEADLINE_SHARE * rs.ttft_slo_ms) / 1000.0
        if rs.policy == "auto" else None,
        cascade=CascadeRule(rs.cascade.signal, rs.cascade.threshold, rs.cascade.first_k,
                            rs.cascade.stream) if rs.policy == "cascade" else None,
    )
