"""The gateway's metrics: children bound once (issue 14) count into the labelled series."""

from __future__ import annotations

from spillgate.telemetry.metrics import GatewayMetrics


def test_bound_children_count_into_the_series_labels_names() -> None:
    m = GatewayMetrics()
    m.request_count("local", "auto", "local_ok", "200").inc()
    m.request_count("local", "auto", "local_ok", "200").inc()
    m.requests.labels("local", "auto", "local_ok", "200").inc()  # the same series
    m.request_count("paid", "auto", "spill", "200").inc()
    m.duration_of("local").observe(0.02)
    page = m.render().decode()
    assert ('spillgate_requests_total{backend="local",reason="local_ok",route="auto",'
            'status="200"} 3.0') in page
    assert ('spillgate_requests_total{backend="paid",reason="spill",route="auto",'
            'status="200"} 1.0') in page
    assert 'spillgate_request_duration_seconds_count{backend="local"} 1.0' in page
