use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;
use crate::{
    export::synthetic::{grpc_client_span, http_server_span, resource},
    span::model::AttrValue,
};

fn red(settings: MetricsSettings) -> (RedMetrics, Arc<SelfMetrics>) {
    let self_metrics = Arc::new(SelfMetrics::default());
    (
        RedMetrics::new(settings, Arc::clone(&self_metrics)),
        self_metrics,
    )
}

#[test]
fn histogram_bounds_are_upper_inclusive() {
    let mut h = Histogram::new(vec![0.005, 0.01, 0.025].into());
    for v in [0.001, 0.005, 0.005_000_1, 0.01, 0.02, 0.025, 0.03, 100.0] {
        h.record(v);
    }
    assert_eq!(h.bucket_counts, vec![2, 2, 2, 2]);
    assert_eq!(h.cumulative_counts(), vec![2, 4, 6, 8]);
    assert_eq!(h.count, 8);
    assert!((h.min - 0.001).abs() < f64::EPSILON);
    assert!((h.max - 100.0).abs() < f64::EPSILON);
}

#[test]
fn spans_land_in_their_family_with_semconv_attributes() {
    let (red, _) = red(MetricsSettings::default());
    let r = resource("shop", 1);
    for seq in 0..10 {
        red.record(&http_server_span(seq, &r));
        red.record(&grpc_client_span(seq, &r));
    }
    let snap = red.snapshot();
    assert_eq!(snap.services.len(), 1);
    let series = &snap.services[0].series;
    // HTTP: status 200 and 500; gRPC: status 0 and 14.
    assert_eq!(series.len(), 4);
    let ok = series
        .iter()
        .find(|s| s.key.family == Family::HttpServer && s.key.status_code == Some(200))
        .unwrap();
    assert_eq!(ok.duration.count, 9);
    assert_eq!(
        ok.key.attributes(),
        vec![
            ("http.request.method", AttrValue::Str("GET".into())),
            ("url.scheme", AttrValue::Str("http".into())),
            ("http.response.status_code", AttrValue::Int(200)),
            ("http.route", AttrValue::Str("/users/{id}".into())),
        ]
    );
    // Durations are 10..16 ms: all in the (0.01, 0.025] bucket except exactly 10 ms.
    let h = &ok.duration;
    assert_eq!(h.bucket_counts[1] + h.bucket_counts[2], 9);
    let resp = ok.response_size.as_ref().unwrap();
    assert_eq!(resp.count, 9);
    let rpc = series
        .iter()
        .find(|s| s.key.family == Family::RpcClient && s.key.grpc_status_code == Some(14))
        .unwrap();
    assert_eq!(rpc.duration.count, 2);
    assert!(rpc.request_size.is_none());
    let attrs = rpc.key.attributes();
    assert!(attrs.contains(&("rpc.system", AttrValue::Str("grpc".into()))));
    assert!(attrs.contains(&("rpc.method", AttrValue::Str("SayHello".into()))));
    assert!(attrs.contains(&("server.port", AttrValue::Int(50051))));
    assert_eq!(snap.data_points(), 3 + 3 + 1 + 1);
}

#[test]
fn unknown_methods_become_other() {
    let (red, _) = red(MetricsSettings::default());
    let r = resource("shop", 1);
    let mut span = http_server_span(0, &r);
    span.attributes.http_request_method = "FROBNICATE".into();
    red.record(&span);
    span.attributes.http_request_method = "get".into();
    red.record(&span);
    let snap = red.snapshot();
    let methods: Vec<_> = snap.services[0]
        .series
        .iter()
        .map(|s| s.key.method)
        .collect();
    assert!(methods.contains(&Some("_OTHER")));
    assert!(methods.contains(&Some("GET")));
}

#[test]
fn series_cap_overflows_into_one_counted_series() {
    let settings = MetricsSettings {
        max_series_per_service: 3,
        ..MetricsSettings::default()
    };
    let (red, self_metrics) = red(settings);
    let r = resource("shop", 1);
    for route in 0..10 {
        let mut span = http_server_span(0, &r);
        span.attributes.http_route = Some(format!("/r{route}"));
        red.record(&span);
    }
    // A route seen before the cap still gets its own series.
    let mut again = http_server_span(0, &r);
    again.attributes.http_route = Some("/r0".into());
    red.record(&again);
    let snap = red.snapshot();
    let series = &snap.services[0].series;
    assert_eq!(series.len(), 4);
    let overflow = series.iter().find(|s| s.key.overflow).unwrap();
    assert_eq!(overflow.key.route.as_deref(), Some(OVERFLOW_ROUTE));
    assert_eq!(overflow.duration.count, 7);
    assert!(
        overflow
            .key
            .attributes()
            .contains(&("otel.metric.overflow", AttrValue::Bool(true)))
    );
    let r0 = series
        .iter()
        .find(|s| s.key.route.as_deref() == Some("/r0"))
        .unwrap();
    assert_eq!(r0.duration.count, 2);
    assert_eq!(self_metrics.metric_series_overflow(), 7);
}

#[test]
fn caps_are_per_service() {
    let settings = MetricsSettings {
        max_series_per_service: 1,
        ..MetricsSettings::default()
    };
    let (red, self_metrics) = red(settings);
    red.record(&http_server_span(0, &resource("a", 1)));
    red.record(&http_server_span(0, &resource("b", 2)));
    assert_eq!(self_metrics.metric_series_overflow(), 0);
    assert_eq!(red.snapshot().services.len(), 2);
}

#[test]
fn node_cap_sends_new_services_to_the_node_wide_overflow() {
    let settings = MetricsSettings {
        max_series: 3,
        ..MetricsSettings::default()
    };
    let (red, self_metrics) = red(settings);
    // One short-lived process after another: each its own service instance.
    for pid in 0..5 {
        red.record(&http_server_span(0, &resource("job", pid)));
    }
    // A service that already has its series keeps recording into it.
    red.record(&http_server_span(1, &resource("job", 0)));
    let snap = red.snapshot();
    let names: Vec<&str> = snap
        .services
        .iter()
        .map(|s| s.resource.service_instance_id.as_str())
        .collect();
    assert_eq!(
        snap.services.len(),
        4,
        "three services and the overflow: {names:?}"
    );
    let overflow = snap
        .services
        .iter()
        .find(|s| s.resource.service_name == OVERFLOW_SERVICE)
        .expect("the node-wide overflow service");
    assert_eq!(overflow.series.len(), 1);
    assert!(overflow.series[0].key.overflow);
    assert_eq!(overflow.series[0].duration.count, 2);
    let recorded: u64 = snap
        .services
        .iter()
        .flat_map(|s| &s.series)
        .map(|s| s.duration.count)
        .sum();
    assert_eq!(recorded, 6, "every span is in some series");
    assert_eq!(self_metrics.metric_series_overflow(), 2);
}

#[test]
fn idle_series_expire_after_the_ttl_and_restart() {
    let settings = MetricsSettings {
        ttl: Duration::from_mins(1),
        ..MetricsSettings::default()
    };
    let (red, self_metrics) = red(settings);
    let r = resource("shop", 1);
    let t0 = Instant::now();
    red.record_at(&http_server_span(0, &r), t0, 1_000);
    red.record_at(
        &grpc_client_span(0, &r),
        t0 + Duration::from_secs(50),
        2_000,
    );
    let snap = red.snapshot_at(t0 + Duration::from_mins(1), 3_000);
    assert_eq!(snap.services[0].series.len(), 2, "exactly at the TTL: kept");
    let snap = red.snapshot_at(t0 + Duration::from_secs(61), 4_000);
    assert_eq!(snap.services[0].series.len(), 1, "the HTTP series expired");
    assert_eq!(snap.services[0].series[0].key.family, Family::RpcClient);
    assert_eq!(self_metrics.metric_series(), 1);
    let snap = red.snapshot_at(t0 + Duration::from_secs(200), 5_000);
    assert!(
        snap.services.is_empty(),
        "a service without series is forgotten"
    );
    // Coming back: a new series with a new start time and fresh counts.
    red.record_at(
        &http_server_span(1, &r),
        t0 + Duration::from_secs(201),
        6_000,
    );
    let snap = red.snapshot_at(t0 + Duration::from_secs(202), 7_000);
    let s = &snap.services[0].series[0];
    assert_eq!(s.start_unix_nano, 6_000);
    assert_eq!(s.duration.count, 1);
}

#[test]
fn expired_series_free_their_place_under_the_cap() {
    let settings = MetricsSettings {
        max_series_per_service: 1,
        ttl: Duration::from_secs(10),
        ..MetricsSettings::default()
    };
    let (red, self_metrics) = red(settings);
    let r = resource("shop", 1);
    let t0 = Instant::now();
    let mut span = http_server_span(0, &r);
    red.record_at(&span, t0, 1);
    red.expire(t0 + Duration::from_secs(11));
    span.attributes.http_route = Some("/other".into());
    red.record_at(&span, t0 + Duration::from_secs(12), 2);
    assert_eq!(self_metrics.metric_series_overflow(), 0);
}

#[test]
fn equal_resources_in_different_arcs_share_series() {
    let (red, _) = red(MetricsSettings::default());
    red.record(&http_server_span(0, &resource("shop", 1)));
    red.record(&http_server_span(2, &resource("shop", 1)));
    let snap = red.snapshot();
    assert_eq!(snap.services.len(), 1);
    assert_eq!(snap.services[0].series[0].duration.count, 2);
}

#[tokio::test]
async fn run_drains_on_cancel() {
    let (red, _) = red(MetricsSettings::default());
    let red = Arc::new(red);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let cancel = CancellationToken::new();
    let r = resource("shop", 1);
    for seq in 0..5 {
        tx.try_send(Arc::new(http_server_span(seq * 2, &r)))
            .unwrap();
    }
    cancel.cancel();
    Arc::clone(&red).run(rx, cancel).await;
    assert_eq!(red.snapshot().services[0].series[0].duration.count, 5);
}
