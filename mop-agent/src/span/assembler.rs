//! Turning one exchange into one span: ids and parent, times, name, attributes, status, and
//! the resource of the process that made it.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use mop_protocol::{HttpExchange, Role};

use super::{
    clock::WallClock,
    linker::Resolved,
    model::{RpcAttributes, ServiceResource, Signals, Span, SpanAttributes, SpanKind, SpanStatus},
};
use crate::{
    capture::conntrack::ConnExchange,
    config::routes::{IgnoreMode, RoutesConfig},
};

/// W3C flag: the trace is sampled.
const SAMPLED: u8 = 1;

/// Builds spans; owns the process table that names their resources.
pub struct Assembler {
    clock: WallClock,
    routes: RoutesConfig,
    processes: HashMap<u32, Arc<ServiceResource>>,
    unknown: Arc<ServiceResource>,
}

impl Assembler {
    /// An assembler with no known process yet; `routes` names server spans' `http.route`.
    pub fn new(clock: WallClock, routes: RoutesConfig) -> Self {
        Self {
            clock,
            routes,
            processes: HashMap::new(),
            unknown: Arc::new(ServiceResource {
                service_name: "unknown_service".to_owned(),
                service_namespace: None,
                service_instance_id: String::new(),
                attributes: Vec::new(),
            }),
        }
    }

    /// Records the resource of a newly instrumented process.
    pub fn process_started(&mut self, pid: u32, resource: Arc<ServiceResource>) {
        self.processes.insert(pid, resource);
    }

    /// True when the process's resource is known.
    pub fn knows(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Forgets a process that exited.
    pub fn process_exited(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Re-measures the monotonic-to-Unix offset (follows clock adjustments).
    pub fn refresh_clock(&mut self) {
        self.clock = WallClock::measure();
    }

    /// Builds the span of one exchange with its settled ids; `None` when its path is ignored
    /// for every signal. An unsampled trace still feeds the metrics.
    pub fn build(&self, cx: &ConnExchange, ids: Resolved) -> Option<Span> {
        let ex = &cx.exchange;
        let kind = match ex.role {
            Role::Server => SpanKind::Server,
            Role::Client => SpanKind::Client,
        };
        let mut signals = self.signals(kind, ex);
        signals.traces &= ids.flags & SAMPLED != 0;
        if !signals.traces && !signals.metrics {
            return None;
        }
        let mut attributes = attributes(kind, cx);
        let rpc = grpc_attributes(ex);
        let status = match &rpc {
            Some(rpc) => grpc_status(kind, rpc.grpc_status_code),
            None => status(kind, ex.status),
        };
        attributes.rpc = rpc;
        if kind == SpanKind::Server && attributes.rpc.is_none() {
            attributes.http_route = attributes
                .url_path
                .as_deref()
                .and_then(|path| self.routes.route_for(path));
        }
        let (start, end) = span_times(kind, ex);
        Some(Span {
            trace_id: ids.trace_id,
            span_id: ids.span_id,
            parent_span_id: ids.parent,
            trace_flags: ids.flags,
            trace_state: ids.trace_state,
            kind,
            name: span_name(&attributes),
            start_unix_nano: self.clock.to_unix_ns(start),
            end_unix_nano: self.clock.to_unix_ns(end.max(start)),
            status,
            pid: cx.pid,
            resource: self
                .processes
                .get(&cx.pid)
                .map_or_else(|| Arc::clone(&self.unknown), Arc::clone),
            attributes,
            signals,
        })
    }

    /// The signals a request feeds, from `routes.ignored_patterns` and `ignore_mode`.
    fn signals(&self, kind: SpanKind, ex: &HttpExchange) -> Signals {
        if kind != SpanKind::Server || self.routes.ignored_patterns.is_empty() {
            return Signals::ALL;
        }
        let (path, _) = split_target(&ex.target);
        if !self.routes.is_ignored(path) {
            return Signals::ALL;
        }
        match self.routes.ignore_mode {
            IgnoreMode::All => Signals {
                traces: false,
                metrics: false,
            },
            IgnoreMode::Traces => Signals {
                traces: false,
                metrics: true,
            },
            IgnoreMode::Metrics => Signals {
                traces: true,
                metrics: false,
            },
        }
    }
}

/// Start and end (monotonic): a server's span runs from the arrival of the request (the exit of
/// the read that returned its first bytes) to the last byte of its response; a client's from
/// the start of its request write to the arrival of the last response byte.
fn span_times(kind: SpanKind, ex: &HttpExchange) -> (u64, u64) {
    let start = match kind {
        SpanKind::Server => ex.request_first_exit_ns,
        SpanKind::Client => ex.request_start_ns,
    };
    let end = if ex.response_end_ns == 0 {
        ex.request_end_ns
    } else {
        ex.response_end_ns
    };
    (start, end)
}

/// `{package.Service}/{Method}` for gRPC; `{method} {route}` when a route is known, else
/// `{method}` (`HTTP` when even the method is unknown).
fn span_name(a: &SpanAttributes) -> String {
    if let Some(rpc) = &a.rpc {
        return format!("{}/{}", rpc.service, rpc.method);
    }
    let method = if a.http_request_method.is_empty() {
        "HTTP"
    } else {
        &a.http_request_method
    };
    match &a.http_route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    }
}

/// The `rpc.*` attributes of a gRPC call (`content-type: application/grpc*` on HTTP/2 with a
/// well-formed `/package.Service/Method` path).
fn grpc_attributes(ex: &HttpExchange) -> Option<RpcAttributes> {
    if !ex.is_grpc() {
        return None;
    }
    let (service, method) = mop_protocol::http2::grpc::split_path(&ex.target)?;
    Some(RpcAttributes {
        service: service.to_owned(),
        method: method.to_owned(),
        grpc_status_code: ex.grpc_status.map(i64::from),
    })
}

/// gRPC span status per the RPC semantic conventions: a client's call failed for any status
/// but `OK`; a server's only for the statuses that mean the server failed (`UNKNOWN`,
/// `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`).
fn grpc_status(kind: SpanKind, code: Option<i64>) -> SpanStatus {
    match (kind, code) {
        (SpanKind::Client, Some(1..)) | (SpanKind::Server, Some(2 | 4 | 12 | 13 | 14 | 15)) => {
            SpanStatus::Error
        }
        _ => SpanStatus::Unset,
    }
}

/// ERROR for 5xx served, 4xx/5xx received; unset otherwise (a 404 served is not an error).
fn status(kind: SpanKind, code: Option<u16>) -> SpanStatus {
    match (kind, code) {
        (SpanKind::Server, Some(500..)) | (SpanKind::Client, Some(400..)) => SpanStatus::Error,
        _ => SpanStatus::Unset,
    }
}

/// Splits a request target into path and query; absolute-form targets (`http://h/p?q`) give
/// their path.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let origin = match target.find("://") {
        Some(i) => {
            let after = &target[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => target,
    };
    match origin.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (origin, None),
    }
}

/// The host part of a `Host` header (`name`, `name:port`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

fn attributes(kind: SpanKind, cx: &ConnExchange) -> SpanAttributes {
    let ex = &cx.exchange;
    let scheme = if cx.tls { "https" } else { "http" };
    let (server, client): (SocketAddr, Option<SocketAddr>) = match kind {
        SpanKind::Server => (cx.local, Some(cx.remote)),
        SpanKind::Client => (cx.remote, None),
    };
    let server_address = ex
        .host
        .as_deref()
        .map(host_name)
        .filter(|h| !h.is_empty())
        .map_or_else(|| server.ip().to_string(), str::to_owned);
    let (path, query) = split_target(&ex.target);
    let (url_path, url_query, url_full) = match kind {
        // An HTTP/2 request whose `:path` could not be decoded: left out, never guessed.
        _ if ex.target.is_empty() => (None, None, None),
        SpanKind::Server => (Some(path.to_owned()), query.map(str::to_owned), None),
        SpanKind::Client => {
            let authority = ex.host.clone().unwrap_or_else(|| server.to_string());
            let full = if ex.target.contains("://") {
                ex.target.clone()
            } else {
                format!("{scheme}://{authority}{}", ex.target)
            };
            (None, None, Some(full))
        }
    };
    SpanAttributes {
        http_request_method: ex.method.clone(),
        url_path,
        url_query,
        url_full,
        url_scheme: scheme,
        http_route: None,
        http_response_status_code: ex.status.map(i64::from),
        server_address: Some(server_address),
        server_port: Some(i64::from(server.port())),
        client_address: client.map(|c| c.ip()),
        network_protocol_version: ex.version.as_str(),
        http_request_body_size: (!ex.request_body_size_unknown)
            .then(|| i64::try_from(ex.request_body_size).unwrap_or(i64::MAX)),
        http_response_body_size: (!ex.response_body_size_unknown)
            .then(|| i64::try_from(ex.response_body_size).unwrap_or(i64::MAX)),
        rpc: None,
    }
}

/// Settled ids for tests: a sampled root.
#[cfg(test)]
pub(crate) fn test_ids() -> Resolved {
    Resolved {
        trace_id: super::model::TraceId([7; 16]),
        span_id: super::model::SpanId([8; 8]),
        parent: None,
        flags: SAMPLED,
        trace_state: None,
    }
}

#[cfg(test)]
mod tests {
    use mop_protocol::{HttpVersion, TraceHeaders};

    use super::*;

    fn exchange(role: Role, target: &str, status: Option<u16>) -> ConnExchange {
        ConnExchange {
            pid: 42,
            conn_id: 1,
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:50000".parse().unwrap(),
            exchange: HttpExchange {
                role,
                version: HttpVersion::Http11,
                method: "GET".into(),
                target: target.into(),
                host: Some("example.test:8080".into()),
                status,
                request_body_size: 0,
                response_body_size: 12,
                trace_headers: TraceHeaders::default(),
                content_type: None,
                request_start_ns: 900,
                request_first_exit_ns: 1_000,
                request_end_ns: 1_000,
                response_start_ns: 1_500,
                response_end_ns: 2_000,
                request_tid: 42,
                request_head_truncated: false,
                request_target_truncated: false,
                response_head_truncated: false,
                request_body_size_unknown: false,
                response_body_size_unknown: false,
                stream_id: 0,
                seq: 0,
                grpc_status: None,
                grpc_message: None,
                reset_code: None,
            },
            tls: false,
        }
    }

    fn assembler() -> Assembler {
        let routes = RoutesConfig {
            unmatched: crate::config::routes::UnmatchedRoutes::Unset,
            ..RoutesConfig::default()
        };
        Assembler::new(WallClock::measure(), routes)
    }

    #[test]
    fn server_span_has_path_query_and_times() {
        let a = assembler();
        let span = a
            .build(&exchange(Role::Server, "/a/b?x=1", Some(404)), test_ids())
            .unwrap();
        assert_eq!(span.kind, SpanKind::Server);
        assert_eq!(span.name, "GET");
        assert_eq!(span.status, SpanStatus::Unset);
        assert_eq!(span.attributes.url_path.as_deref(), Some("/a/b"));
        assert_eq!(span.attributes.url_query.as_deref(), Some("x=1"));
        assert_eq!(
            span.attributes.server_address.as_deref(),
            Some("example.test")
        );
        assert_eq!(span.attributes.server_port, Some(8080));
        assert_eq!(
            span.attributes.client_address,
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(span.end_unix_nano - span.start_unix_nano, 1_000);
        assert_eq!(span.parent_span_id, None);
        assert_eq!(span.resource.service_name, "unknown_service");
    }

    #[test]
    fn client_span_has_full_url_and_error_on_4xx() {
        let a = assembler();
        let span = a
            .build(&exchange(Role::Client, "/x", Some(404)), test_ids())
            .unwrap();
        assert_eq!(span.kind, SpanKind::Client);
        assert_eq!(span.status, SpanStatus::Error);
        assert_eq!(
            span.attributes.url_full.as_deref(),
            Some("http://example.test:8080/x")
        );
        assert_eq!(span.attributes.server_port, Some(50000));
        assert_eq!(span.end_unix_nano - span.start_unix_nano, 1_100);
    }

    #[test]
    fn splits_targets_and_hosts() {
        assert_eq!(split_target("/p?q=1"), ("/p", Some("q=1")));
        assert_eq!(split_target("http://h:1/p/x?y"), ("/p/x", Some("y")));
        assert_eq!(split_target("http://h"), ("/", None));
        assert_eq!(host_name("h:80"), "h");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("plain"), "plain");
    }

    #[test]
    fn uses_the_process_resource() {
        let mut a = assembler();
        let resource = Arc::new(ServiceResource {
            service_name: "svc".into(),
            service_namespace: None,
            service_instance_id: "i".into(),
            attributes: vec![],
        });
        a.process_started(42, Arc::clone(&resource));
        assert_eq!(
            a.build(&exchange(Role::Server, "/", Some(200)), test_ids())
                .unwrap()
                .resource,
            resource
        );
        a.process_exited(42);
        assert_eq!(
            a.build(&exchange(Role::Server, "/", Some(200)), test_ids())
                .unwrap()
                .resource
                .service_name,
            "unknown_service"
        );
    }
}

#[cfg(test)]
mod route_tests {
    use mop_protocol::{HttpVersion, TraceHeaders};

    use super::*;
    use crate::config::routes::RoutePattern;

    pub(super) fn server(target: &str) -> ConnExchange {
        ConnExchange {
            pid: 1,
            conn_id: 1,
            local: "127.0.0.1:80".parse().unwrap(),
            remote: "127.0.0.1:5000".parse().unwrap(),
            exchange: HttpExchange {
                role: Role::Server,
                version: HttpVersion::Http11,
                method: "GET".into(),
                target: target.into(),
                host: None,
                status: Some(200),
                request_body_size: 0,
                response_body_size: 0,
                trace_headers: TraceHeaders::default(),
                content_type: None,
                request_start_ns: 1,
                request_first_exit_ns: 1,
                request_end_ns: 1,
                response_start_ns: 2,
                response_end_ns: 2,
                request_tid: 1,
                request_head_truncated: false,
                request_target_truncated: false,
                response_head_truncated: false,
                request_body_size_unknown: false,
                response_body_size_unknown: false,
                stream_id: 0,
                seq: 0,
                grpc_status: None,
                grpc_message: None,
                reset_code: None,
            },
            tls: false,
        }
    }

    fn with(routes: RoutesConfig) -> Assembler {
        Assembler::new(WallClock::measure(), routes)
    }

    #[test]
    fn names_server_spans_by_route() {
        let routes = RoutesConfig {
            patterns: vec![RoutePattern::parse("/users/{id}").unwrap()],
            ..RoutesConfig::default()
        };
        let a = with(routes);
        let span = a.build(&server("/users/42?x=1"), test_ids()).unwrap();
        assert_eq!(span.name, "GET /users/{id}");
        assert_eq!(span.attributes.http_route.as_deref(), Some("/users/{id}"));
        // Unmatched paths fall back to the heuristic by default, as in OBI.
        let span = a.build(&server("/orders/123"), test_ids()).unwrap();
        assert_eq!(span.attributes.http_route.as_deref(), Some("/orders/*"));
    }

    #[test]
    fn ignored_paths_follow_the_ignore_mode() {
        let routes = |mode| RoutesConfig {
            ignored_patterns: vec![RoutePattern::parse("/health").unwrap()],
            ignore_mode: mode,
            ..RoutesConfig::default()
        };
        assert!(
            with(routes(IgnoreMode::All))
                .build(&server("/health"), test_ids())
                .is_none()
        );
        let span = with(routes(IgnoreMode::Traces))
            .build(&server("/health"), test_ids())
            .unwrap();
        assert_eq!((span.signals.traces, span.signals.metrics), (false, true));
        let span = with(routes(IgnoreMode::Metrics))
            .build(&server("/health"), test_ids())
            .unwrap();
        assert_eq!((span.signals.traces, span.signals.metrics), (true, false));
        assert!(
            with(routes(IgnoreMode::All))
                .build(&server("/other"), test_ids())
                .is_some()
        );
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[test]
    fn tls_exchanges_are_https() {
        let a = Assembler::new(WallClock::measure(), RoutesConfig::default());
        let mut cx = route_tests::server("/x");
        cx.exchange.role = Role::Client;
        cx.exchange.host = Some("example.test".into());
        cx.tls = true;
        let span = a.build(&cx, test_ids()).unwrap();
        assert_eq!(
            span.attributes.url_full.as_deref(),
            Some("https://example.test/x")
        );
        assert_eq!(span.attributes.url_scheme, "https");
    }
}

#[cfg(test)]
mod body_size_tests {
    use super::*;

    #[test]
    fn unknown_body_sizes_are_left_out() {
        let a = Assembler::new(WallClock::measure(), RoutesConfig::default());
        let mut cx = route_tests::server("/x");
        cx.exchange.response_body_size_unknown = true;
        cx.exchange.request_body_size = 12;
        let span = a.build(&cx, test_ids()).unwrap();
        assert_eq!(span.attributes.http_response_body_size, None);
        assert_eq!(span.attributes.http_request_body_size, Some(12));
        let keys: Vec<&str> = span
            .attributes
            .key_values()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert!(!keys.contains(&"http.response.body.size"));
        assert!(keys.contains(&"http.request.body.size"));
    }
}

#[cfg(test)]
mod grpc_tests {
    use mop_protocol::HttpVersion;

    use super::*;
    use crate::span::AttrValue;

    fn grpc(role: Role, path: &str, status: Option<u32>) -> ConnExchange {
        let mut cx = route_tests::server(path);
        cx.exchange.role = role;
        cx.exchange.version = HttpVersion::Http2;
        cx.exchange.method = "POST".into();
        cx.exchange.content_type = Some("application/grpc".into());
        cx.exchange.grpc_status = status;
        cx
    }

    fn assembler() -> Assembler {
        Assembler::new(WallClock::measure(), RoutesConfig::default())
    }

    #[test]
    fn grpc_calls_are_named_and_attributed_as_rpcs() {
        let span = assembler()
            .build(
                &grpc(Role::Server, "/helloworld.Greeter/SayHello", Some(0)),
                test_ids(),
            )
            .unwrap();
        assert_eq!(span.name, "helloworld.Greeter/SayHello");
        assert_eq!(span.status, SpanStatus::Unset);
        let kv = span.attributes.key_values();
        let get = |k: &str| kv.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone());
        assert_eq!(get("rpc.system"), Some(AttrValue::Str("grpc".into())));
        assert_eq!(
            get("rpc.service"),
            Some(AttrValue::Str("helloworld.Greeter".into()))
        );
        assert_eq!(get("rpc.method"), Some(AttrValue::Str("SayHello".into())));
        assert_eq!(get("rpc.grpc.status_code"), Some(AttrValue::Int(0)));
        assert_eq!(
            get("network.protocol.version"),
            Some(AttrValue::Str("2".into()))
        );
        assert_eq!(get("http.request.method"), None);
        assert_eq!(span.attributes.http_route, None);
    }

    #[test]
    fn grpc_status_follows_the_semantic_conventions() {
        let a = assembler();
        let path = "/pkg.Svc/M";
        // NOT_FOUND: an error for the client, not for the server.
        assert_eq!(
            a.build(&grpc(Role::Client, path, Some(5)), test_ids())
                .unwrap()
                .status,
            SpanStatus::Error
        );
        assert_eq!(
            a.build(&grpc(Role::Server, path, Some(5)), test_ids())
                .unwrap()
                .status,
            SpanStatus::Unset
        );
        // INTERNAL and DEADLINE_EXCEEDED: errors for both.
        for code in [4, 13] {
            assert_eq!(
                a.build(&grpc(Role::Server, path, Some(code)), test_ids())
                    .unwrap()
                    .status,
                SpanStatus::Error
            );
        }
        // No status seen (client reset): not called an error, status left out.
        let span = a
            .build(&grpc(Role::Client, path, None), test_ids())
            .unwrap();
        assert_eq!(span.status, SpanStatus::Unset);
        assert_eq!(span.attributes.rpc.unwrap().grpc_status_code, None);
    }
}
