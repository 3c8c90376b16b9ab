//! `ebpf`: what the kernel side captures and how big its maps are.
//!
//! OBI keys: `ebpf.buffer_sizes.http` (`OTEL_EBPF_BPF_BUFFER_SIZE_HTTP`),
//! `ebpf.context_propagation` (`OTEL_EBPF_BPF_CONTEXT_PROPAGATION`) and
//! `ebpf.track_request_headers` (`OTEL_EBPF_BPF_TRACK_REQUEST_HEADERS`).
//!
//! `buffer_sizes.http` is OBI's per-request payload capture limit, where `0` (OBI's default)
//! means "only the fixed-size buffer" (256 bytes in OBI). mop captures one buffer per event,
//! so the key sets [`EbpfConfig::buffer_size`] directly: `0` or unset is 256, otherwise
//! 64..=4096; OBI allows up to 65536, and larger values are rejected as not supported yet.
//!
//! mop extensions, not in OBI: `ebpf.capture_path` (`OTEL_EBPF_BPF_CAPTURE_PATH`),
//! `ebpf.ring_buffer_size` (`OTEL_EBPF_BPF_RING_BUFFER_SIZE`) and `ebpf.max_connections`
//! (`OTEL_EBPF_BPF_MAX_CONNECTIONS`).

use serde::Deserialize;

use super::{
    value::{self, Bad, Ctx, Parsed},
    yaml::{Node, map, text},
};

/// Default bytes captured per buffer (OBI's fixed HTTP buffer size).
pub const DEFAULT_BUFFER_SIZE: u32 = 256;
/// Smallest accepted capture size: enough for a request line and a few headers.
pub const MIN_BUFFER_SIZE: u32 = 64;
/// Largest capture size mop implements (one ring-buffer record per buffer).
pub const MAX_BUFFER_SIZE: u32 = 4096;
/// Default ring buffer size: 16 MiB.
pub const DEFAULT_RING_BUFFER_SIZE: u32 = 16 << 20;
/// Default number of tracked connections (size of the connection maps).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 65_536;

/// Kernel-side settings, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EbpfConfig {
    /// Bytes of each read/write captured and sent to userspace (64..=4096, default 256).
    pub buffer_size: u32,
    /// Which hooks capture socket data (mop extension).
    pub capture_path: CapturePath,
    /// How trace context is propagated to downstream services.
    pub context_propagation: ContextPropagation,
    /// Honour incoming `traceparent` headers (mop always parses them; default true, unlike
    /// OBI, whose kprobe path only does so when this is set).
    pub track_request_headers: bool,
    /// Bytes of the capture ring buffer; a power of two (default 16 MiB).
    pub ring_buffer_size: u32,
    /// Entries in the per-connection maps (default 65536).
    pub max_connections: u32,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            buffer_size: DEFAULT_BUFFER_SIZE,
            capture_path: CapturePath::Auto,
            context_propagation: ContextPropagation::Disabled,
            track_request_headers: true,
            ring_buffer_size: DEFAULT_RING_BUFFER_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The hooks that capture socket data (mop extension `ebpf.capture_path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapturePath {
    /// fentry/fexit where the kernel has BTF and trampolines, else kprobes.
    Auto,
    /// fentry/fexit only; fails on kernels without them.
    Fentry,
    /// kprobes/kretprobes only.
    Kprobe,
    /// syscall tracepoints only.
    Tracepoint,
}

impl CapturePath {
    const CHOICES: &[(&str, Self)] = &[
        ("auto", Self::Auto),
        ("fentry", Self::Fentry),
        ("kprobe", Self::Kprobe),
        ("tracepoint", Self::Tracepoint),
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("auto", |(n, _)| n)
    }
}

/// Trace context propagation (OBI's `ebpf.context_propagation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextPropagation {
    /// HTTP headers and TCP options.
    All,
    /// Inject `traceparent` into outgoing HTTP requests.
    Headers,
    /// Carry the context in TCP options.
    Tcp,
    /// No propagation (default).
    Disabled,
}

impl ContextPropagation {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Headers => "headers",
            Self::Tcp => "tcp",
            Self::Disabled => "disabled",
        }
    }
}

/// Parser for OBI's context propagation values: `all`, `disabled`, `headers` (alias `http`),
/// `tcp`, or a comma list of `headers` and `tcp`.
fn context_propagation(node: &Node) -> Parsed<ContextPropagation> {
    const EXPECTED: &str = "all, disabled, headers, tcp or headers,tcp";
    let s = value::scalar(node, EXPECTED)?.trim().to_ascii_lowercase();
    match s.as_str() {
        "all" => return Ok(ContextPropagation::All),
        "disabled" | "" => return Ok(ContextPropagation::Disabled),
        _ => {}
    }
    let (mut headers, mut tcp) = (false, false);
    for part in s.split(',').map(str::trim) {
        match part {
            "headers" | "http" => headers = true,
            "tcp" => tcp = true,
            "ip" => {
                return Err(Bad::Invalid(format!(
                    "{EXPECTED} (`ip` has no effect in OBI any more; use tcp)"
                )));
            }
            _ => return Err(Bad::Invalid(EXPECTED.to_owned())),
        }
    }
    Ok(match (headers, tcp) {
        (true, true) => ContextPropagation::All,
        (true, false) => ContextPropagation::Headers,
        _ => ContextPropagation::Tcp,
    })
}

fn buffer_size(node: &Node) -> Parsed<u32> {
    let expected = format!(
        "0 (the default, {DEFAULT_BUFFER_SIZE}) or {MIN_BUFFER_SIZE} to {MAX_BUFFER_SIZE} bytes"
    );
    let n = value::integer(0, u64::MAX)(node).map_err(|e| match e {
        Bad::WrongType(_) => Bad::WrongType(expected.clone()),
        _ => Bad::Invalid(expected.clone()),
    })?;
    match n {
        0 => Ok(DEFAULT_BUFFER_SIZE),
        n if (u64::from(MIN_BUFFER_SIZE)..=u64::from(MAX_BUFFER_SIZE)).contains(&n) => Ok(n as u32),
        n if n > u64::from(MAX_BUFFER_SIZE) && n <= 65_536 => {
            Err(Bad::Unsupported(format!("up to {MAX_BUFFER_SIZE} bytes")))
        }
        _ => Err(Bad::Invalid(expected)),
    }
}

fn ring_buffer_size(node: &Node) -> Parsed<u32> {
    let n = value::byte_size(64 << 10, 1 << 30)(node)?;
    if n.is_power_of_two() {
        Ok(n as u32)
    } else {
        Err(Bad::Invalid("a power of two from 64KiB to 1GiB".to_owned()))
    }
}

/// The `ebpf` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawEbpf {
    buffer_sizes: RawBufferSizes,
    context_propagation: Option<Node>,
    track_request_headers: Option<Node>,
    capture_path: Option<Node>,
    ring_buffer_size: Option<Node>,
    max_connections: Option<Node>,
}

/// `ebpf.buffer_sizes` as written; only `http` is implemented.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBufferSizes {
    http: Option<Node>,
}

/// Validates `ebpf` and its variables.
pub(super) fn build(raw: &RawEbpf, ctx: &mut Ctx<'_>) -> EbpfConfig {
    let d = EbpfConfig::default();
    EbpfConfig {
        buffer_size: ctx
            .get(
                "ebpf.buffer_sizes.http",
                raw.buffer_sizes.http.as_ref(),
                &["OTEL_EBPF_BPF_BUFFER_SIZE_HTTP"],
                buffer_size,
            )
            .unwrap_or(d.buffer_size),
        capture_path: ctx
            .get(
                "ebpf.capture_path",
                raw.capture_path.as_ref(),
                &["OTEL_EBPF_BPF_CAPTURE_PATH"],
                value::choice(CapturePath::CHOICES, &[]),
            )
            .unwrap_or(d.capture_path),
        context_propagation: ctx
            .get(
                "ebpf.context_propagation",
                raw.context_propagation.as_ref(),
                &["OTEL_EBPF_BPF_CONTEXT_PROPAGATION"],
                context_propagation,
            )
            .unwrap_or(d.context_propagation),
        track_request_headers: ctx
            .get(
                "ebpf.track_request_headers",
                raw.track_request_headers.as_ref(),
                &["OTEL_EBPF_BPF_TRACK_REQUEST_HEADERS"],
                value::boolean,
            )
            .unwrap_or(d.track_request_headers),
        ring_buffer_size: ctx
            .get(
                "ebpf.ring_buffer_size",
                raw.ring_buffer_size.as_ref(),
                &["OTEL_EBPF_BPF_RING_BUFFER_SIZE"],
                ring_buffer_size,
            )
            .unwrap_or(d.ring_buffer_size),
        max_connections: ctx
            .get(
                "ebpf.max_connections",
                raw.max_connections.as_ref(),
                &["OTEL_EBPF_BPF_MAX_CONNECTIONS"],
                value::integer(1024, 1 << 22),
            )
            .map_or(d.max_connections, |n| n as u32),
    }
}

impl EbpfConfig {
    /// The effective `ebpf` section in OBI's key names (plus mop's extensions).
    pub(super) fn to_node(&self) -> Node {
        map([
            (
                "buffer_sizes",
                Some(map([("http", Some(Node::Int(self.buffer_size.into())))])),
            ),
            (
                "context_propagation",
                Some(text(self.context_propagation.as_str())),
            ),
            (
                "track_request_headers",
                Some(Node::Bool(self.track_request_headers)),
            ),
            ("capture_path", Some(text(self.capture_path.as_str()))),
            (
                "ring_buffer_size",
                Some(text(value::format_bytes(self.ring_buffer_size.into()))),
            ),
            (
                "max_connections",
                Some(Node::Int(self.max_connections.into())),
            ),
        ])
    }
}
