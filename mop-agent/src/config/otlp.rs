//! What the OTLP trace and metric exporters share: endpoint resolution per the OpenTelemetry
//! specification, protocol, headers, timeout, compression and TLS settings.
//!
//! Precedence for each setting: the per-signal variable (`OTEL_EXPORTER_OTLP_TRACES_*`), the
//! shared variable (`OTEL_EXPORTER_OTLP_*`), the YAML key, then the default. The endpoint is
//! the exception the specification makes: a per-signal endpoint (variable or YAML
//! `endpoint`) is used verbatim and beats the shared `OTEL_EXPORTER_OTLP_ENDPOINT`, which
//! gets `/v1/traces` or `/v1/metrics` appended for http/protobuf (not for gRPC).
//!
//! `headers`, `timeout`, `compression` and `ca_file` are mop extensions of OBI's YAML; OBI
//! reads only the variables.

use std::{fmt, path::PathBuf, time::Duration};

use super::{
    value::{self, Bad, Ctx, Parsed},
    yaml::{Node, map, text},
};

/// Default export timeout (the OpenTelemetry SDK default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated `http://` or `https://` OTLP endpoint URL.
///
/// `http://` means plaintext (for gRPC too) and `https://` means TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpEndpoint {
    url: String,
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl OtlpEndpoint {
    /// Parses an absolute `http`/`https` URL without credentials, query or fragment.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (scheme, rest) = s.split_once("://").ok_or("not an absolute URL")?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => return Err(format!("scheme `{other}` is not http or https")),
        };
        if rest.contains(['?', '#']) {
            return Err("query strings and fragments are not supported".to_owned());
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if authority.contains('@') {
            return Err("credentials in the URL are not supported; use headers".to_owned());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                Some(
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or(format!("bad port `{port}`"))?,
                ),
            ),
            _ => (authority, None),
        };
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~%".contains(c))
        };
        if !host_ok {
            return Err(format!("bad host `{host}`"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("whitespace in the path".to_owned());
        }
        Ok(Self {
            url: format!("{}://{authority}{path}", if tls { "https" } else { "http" }),
            tls,
            host: host.to_owned(),
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            path: path.to_owned(),
        })
    }

    /// The full URL to send to (for HTTP, including the signal path).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `https://`: use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Host name or IP literal (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL path, possibly empty.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `self` with `/v1/<signal>` appended to its path (a trailing `/` is not doubled).
    fn with_signal_path(&self, suffix: &str) -> Self {
        let base = self.url.trim_end_matches('/');
        Self::parse(&format!("{base}{suffix}")).expect("appending a path keeps a valid URL")
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// OTLP transport and encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

impl OtlpProtocol {
    const CHOICES: &[(&str, Self)] = &[("grpc", Self::Grpc), ("http/protobuf", Self::HttpProtobuf)];

    /// The specification's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Export compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip bodies (gRPC: `grpc-encoding: gzip`).
    Gzip,
}

/// Which signal an exporter carries: names its variables, YAML section and HTTP path.
pub(super) struct Signal {
    /// YAML section, e.g. `otel_traces_export`.
    pub section: &'static str,
    /// Infix of its variables, e.g. `TRACES`.
    pub env: &'static str,
    /// Path appended to the shared endpoint for HTTP, e.g. `/v1/traces`.
    pub path: &'static str,
}

/// Settings shared by both OTLP exporters, after resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct OtlpCommon {
    /// Where to send; `None` disables the exporter.
    pub endpoint: Option<OtlpEndpoint>,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Extra request headers / gRPC metadata, in order, names unique ignoring case.
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Body compression; `None` is `none`.
    pub compression: Option<Compression>,
    /// PEM file of CAs to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
}

/// The YAML values of the shared keys of one exporter section.
#[derive(Default)]
pub(super) struct CommonNodes<'a> {
    /// `endpoint`
    pub endpoint: Option<&'a Node>,
    /// `protocol`
    pub protocol: Option<&'a Node>,
    /// `headers`
    pub headers: Option<&'a Node>,
    /// `timeout`
    pub timeout: Option<&'a Node>,
    /// `compression`
    pub compression: Option<&'a Node>,
    /// `ca_file`
    pub ca_file: Option<&'a Node>,
    /// `insecure_skip_verify`
    pub insecure_skip_verify: Option<&'a Node>,
}

fn endpoint(node: &Node) -> Parsed<OtlpEndpoint> {
    const EXPECTED: &str = "an http:// or https:// URL";
    let s = value::scalar(node, EXPECTED)?;
    if s.trim_start().to_ascii_lowercase().starts_with("unix:") {
        return Err(Bad::Unsupported("http:// and https:// URLs".to_owned()));
    }
    OtlpEndpoint::parse(&s).map_err(|e| Bad::Invalid(format!("{EXPECTED} ({e})")))
}

fn protocol(node: &Node) -> Parsed<OtlpProtocol> {
    value::choice(OtlpProtocol::CHOICES, &["http/json"])(node)
}

fn compression(node: &Node) -> Parsed<Option<Compression>> {
    value::choice(&[("gzip", Some(Compression::Gzip)), ("none", None)], &[])(node)
}

/// Parses the `k=v,k2=v2` header list of the OpenTelemetry variables (percent-decoded).
pub fn parse_header_list(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').filter(|i| !i.trim().is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("`{}` has no `=`", item.trim()))?;
        let k = percent_decode(k.trim())?;
        let v = percent_decode(v.trim())?;
        check_header(&k, &v)?;
        out.push((k, v));
    }
    Ok(out)
}

fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("bad header name `{name}`"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("control character in the value of `{name}`"));
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| format!("bad percent escape in `{s}`"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` does not decode to UTF-8"))
}

fn headers(node: &Node) -> Parsed<Vec<(String, String)>> {
    const EXPECTED: &str = "a mapping of header names to values, or `k=v,k2=v2`";
    match node {
        Node::Str(s) => parse_header_list(s).map_err(|e| Bad::Invalid(format!("{EXPECTED} ({e})"))),
        Node::Map(entries) => entries
            .iter()
            .map(|(k, v)| {
                let v = value::scalar(v, EXPECTED)?;
                check_header(k, &v).map_err(|e| Bad::Invalid(format!("{EXPECTED} ({e})")))?;
                Ok((k.clone(), v))
            })
            .collect(),
        _ => Err(Bad::WrongType(EXPECTED.to_owned())),
    }
}

/// Adds `new` to `headers`, replacing same-named (ignoring case) entries.
fn merge_headers(headers: &mut Vec<(String, String)>, new: Vec<(String, String)>) {
    for (k, v) in new {
        headers.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
        headers.push((k, v));
    }
}

/// Resolves the shared settings of one exporter.
pub(super) fn build(signal: &Signal, nodes: &CommonNodes<'_>, ctx: &mut Ctx<'_>) -> OtlpCommon {
    let key = |k: &str| format!("{}.{k}", signal.section);
    let var = |k: &str| format!("OTEL_EXPORTER_OTLP_{}_{k}", signal.env);
    let shared = |k: &str| format!("OTEL_EXPORTER_OTLP_{k}");

    let own = ctx.get(
        &key("endpoint"),
        nodes.endpoint,
        &[&var("ENDPOINT")],
        endpoint,
    );
    let shared_endpoint = ctx.env(&[&shared("ENDPOINT")], endpoint);
    let explicit = ctx.get(
        &key("protocol"),
        nodes.protocol,
        &[&var("PROTOCOL"), &shared("PROTOCOL")],
        protocol,
    );
    let base = own.as_ref().or(shared_endpoint.as_ref());
    // As OBI: without an explicit protocol, a port ending in 4317 means gRPC, else HTTP.
    let protocol = explicit.unwrap_or_else(|| match base {
        Some(e) if e.port().to_string().ends_with("4317") => OtlpProtocol::Grpc,
        _ => OtlpProtocol::HttpProtobuf,
    });
    let endpoint = match (own, shared_endpoint) {
        (Some(own), _) => Some(own),
        (None, Some(base)) if protocol == OtlpProtocol::HttpProtobuf => {
            Some(base.with_signal_path(signal.path))
        }
        (None, base) => base,
    };

    let mut all_headers = ctx
        .yaml(&key("headers"), nodes.headers, headers)
        .unwrap_or_default();
    for name in [shared("HEADERS"), var("HEADERS")] {
        if let Some(h) = ctx.env(&[&name], headers) {
            merge_headers(&mut all_headers, h);
        }
    }
    let timeout_range = (Duration::from_millis(1), Duration::from_hours(1));
    let yaml_timeout = ctx.yaml(
        &key("timeout"),
        nodes.timeout,
        value::duration(timeout_range.0, timeout_range.1),
    );
    let env_timeout = ctx.env(
        &[&var("TIMEOUT"), &shared("TIMEOUT")],
        value::millis(timeout_range.0, timeout_range.1),
    );
    OtlpCommon {
        endpoint,
        protocol,
        headers: all_headers,
        timeout: env_timeout.or(yaml_timeout).unwrap_or(DEFAULT_TIMEOUT),
        compression: ctx
            .get(
                &key("compression"),
                nodes.compression,
                &[&var("COMPRESSION"), &shared("COMPRESSION")],
                compression,
            )
            .flatten(),
        ca_file: ctx
            .get(
                &key("ca_file"),
                nodes.ca_file,
                &[&var("CERTIFICATE"), &shared("CERTIFICATE")],
                value::string,
            )
            .map(PathBuf::from),
        insecure_skip_verify: ctx
            .get(
                &key("insecure_skip_verify"),
                nodes.insecure_skip_verify,
                &["OTEL_EBPF_INSECURE_SKIP_VERIFY"],
                value::boolean,
            )
            .unwrap_or(false),
    }
}

impl OtlpCommon {
    /// The shared keys for the effective config; header values are replaced by `<redacted>`
    /// unless `secrets` is set.
    pub(super) fn to_entries(&self, secrets: bool) -> Vec<(&'static str, Option<Node>)> {
        let headers = (!self.headers.is_empty()).then(|| {
            Node::Map(
                self.headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            text(if secrets { v.as_str() } else { "<redacted>" }),
                        )
                    })
                    .collect(),
            )
        });
        vec![
            ("endpoint", self.endpoint.as_ref().map(|e| text(e.url()))),
            ("protocol", Some(text(self.protocol.as_str()))),
            ("headers", headers),
            ("timeout", Some(text(value::format_duration(self.timeout)))),
            (
                "compression",
                Some(text(if self.compression.is_some() {
                    "gzip"
                } else {
                    "none"
                })),
            ),
            (
                "ca_file",
                self.ca_file.as_ref().map(|p| text(p.display().to_string())),
            ),
            (
                "insecure_skip_verify",
                Some(Node::Bool(self.insecure_skip_verify)),
            ),
        ]
    }
}

/// Builds a mapping of the shared keys followed by `extra`.
pub(super) fn section_node(
    common: &OtlpCommon,
    secrets: bool,
    extra: Vec<(&str, Option<Node>)>,
) -> Node {
    map(common.to_entries(secrets).into_iter().chain(extra))
}
