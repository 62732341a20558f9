"""The sections of the node config, one module a feature (server, backends, routes, rules,
cache, ledger, telemetry, cost, spend guard, alerts, batch).

`spillgate.settings` joins them into `Settings`, loads and checks it, and re-exports every
section: import them from there.
"""
