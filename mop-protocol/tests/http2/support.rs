//! Fixture loading and feeding helpers.

use std::path::PathBuf;

use mop_protocol::http1::Http1Connection;
use mop_protocol::http2::{Http2Connection, Http2Limits, Http2Stats, looks_like_preface};
use mop_protocol::{Direction, HttpExchange, HttpVersion, Role, Segment, TraceHeaders};

/// Who recorded bytes belong to: `true` for client to server.
pub(crate) type Recorded = Vec<(bool, Vec<u8>)>;

/// Reads `tests/fixtures/http2/<name>.seg` (format in `record.py` there).
pub(crate) fn fixture(name: &str) -> Recorded {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "http2",
        &format!("{name}.seg"),
    ]
    .iter()
    .collect();
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let line = std::str::from_utf8(&rest[..nl]).unwrap();
        let (dir, len) = line.split_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        out.push((dir == ">", rest[nl + 1..nl + 1 + len].to_vec()));
        assert_eq!(rest[nl + 1 + len], b'\n');
        rest = &rest[nl + 2 + len..];
    }
    out
}

pub(crate) const FIXTURES: [&str; 7] = [
    "grpc_calls",
    "grpc_concurrent",
    "nginx_curl",
    "nginx_h2",
    "hypercorn_prior_knowledge",
    "hypercorn_h2",
    "hypercorn_upgrade",
];

/// The instrumented process's side of a recorded connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

impl Side {
    pub(crate) fn dir(self, client_to_server: bool) -> Direction {
        match (self, client_to_server) {
            (Self::Server, true) | (Self::Client, false) => Direction::Ingress,
            _ => Direction::Egress,
        }
    }

    pub(crate) fn role(self) -> Role {
        match self {
            Self::Server => Role::Server,
            Self::Client => Role::Client,
        }
    }
}

/// Timestamps of recorded segment `i`: entry, exit, thread.
pub(crate) fn times(i: usize) -> (u64, u64, u32) {
    let enter = 1_000 * (i as u64 + 1);
    (enter, enter + 100, 100 + i as u32)
}

/// Close timestamp used by the helpers.
pub(crate) const CLOSE_NS: u64 = 999_999;

/// One piece of a recorded segment to feed.
pub(crate) struct Piece<'a> {
    pub(crate) index: usize,
    pub(crate) c2s: bool,
    pub(crate) head: &'a [u8],
    pub(crate) gap: u64,
    pub(crate) tail: &'a [u8],
}

pub(crate) fn whole(index: usize, c2s: bool, head: &[u8]) -> Piece<'_> {
    Piece {
        index,
        c2s,
        head,
        gap: 0,
        tail: &[],
    }
}

/// What the tracker does: HTTP/2 from the start when the client's first bytes are the preface
/// (or are not HTTP/1 at all), else HTTP/1.1 until a 101, then HTTP/2 from the upgrade, with
/// the segment that carried the 101 fed again.
pub(crate) struct Tracker {
    side: Side,
    limits: Http2Limits,
    h1: Option<Http1Connection>,
    pub(crate) h2: Option<Http2Connection>,
    pub(crate) out: Vec<HttpExchange>,
}

impl Tracker {
    pub(crate) fn new(side: Side, limits: Http2Limits) -> Self {
        Self {
            side,
            limits,
            h1: None,
            h2: None,
            out: Vec::new(),
        }
    }

    pub(crate) fn feed(&mut self, p: &Piece<'_>) {
        let (enter_ns, exit_ns, tid) = times(p.index);
        let seg = Segment {
            head: p.head,
            gap: p.gap,
            tail: p.tail,
            enter_ns,
            exit_ns,
            tid,
        };
        let dir = self.side.dir(p.c2s);
        if self.h1.is_none() && self.h2.is_none() {
            // A real tracker sees whole syscalls; pieces of one byte need the prefix test.
            let preface = mop_protocol::http2::PREFACE;
            if !p.c2s || looks_like_preface(p.head) || preface.starts_with(p.head) {
                self.h2 = Some(Http2Connection::new(self.limits));
            } else {
                self.h1 = Some(Http1Connection::default());
            }
        }
        if let Some(h2) = &mut self.h2 {
            h2.feed(dir, &seg, &mut self.out);
            return;
        }
        let h1 = self.h1.as_mut().unwrap();
        let before = self.out.len();
        h1.feed(dir, &seg, &mut self.out);
        if h1.is_tunnel() {
            let at = self.out[before..]
                .iter()
                .position(|x| x.status == Some(101))
                .map(|i| before + i);
            if let Some(at) = at {
                let upgrade = self.out.remove(at);
                let mut h2 = Http2Connection::from_h2c_upgrade(self.limits, upgrade);
                h2.feed(dir, &seg, &mut self.out);
                self.h2 = Some(h2);
            }
            self.h1 = None;
        }
    }

    pub(crate) fn close(mut self) -> (Vec<HttpExchange>, Http2Stats) {
        let mut stats = Http2Stats::default();
        if let Some(h2) = &mut self.h2 {
            h2.on_close(CLOSE_NS, &mut self.out);
            stats = h2.take_stats();
        }
        if let Some(h1) = &mut self.h1 {
            h1.on_close(CLOSE_NS, &mut self.out);
        }
        (self.out, stats)
    }
}

/// Feeds pieces through a [`Tracker`], closes.
pub(crate) fn run_pieces<'a>(
    side: Side,
    limits: Http2Limits,
    pieces: impl IntoIterator<Item = Piece<'a>>,
) -> (Vec<HttpExchange>, Http2Stats) {
    let mut t = Tracker::new(side, limits);
    for p in pieces {
        t.feed(&p);
    }
    t.close()
}

/// Feeds pieces straight to an [`Http2Connection`] (a connection known to be HTTP/2, e.g.
/// joined late), closes.
pub(crate) fn run_h2_pieces<'a>(
    side: Side,
    limits: Http2Limits,
    pieces: impl IntoIterator<Item = Piece<'a>>,
) -> (Vec<HttpExchange>, Http2Stats) {
    let mut t = Tracker::new(side, limits);
    t.h2 = Some(Http2Connection::new(limits));
    for p in pieces {
        t.feed(&p);
    }
    t.close()
}

/// Feeds every recorded segment whole.
pub(crate) fn run(side: Side, rec: &Recorded) -> (Vec<HttpExchange>, Http2Stats) {
    run_pieces(
        side,
        Http2Limits::default(),
        rec.iter()
            .enumerate()
            .map(|(i, (c2s, b))| whole(i, *c2s, b)),
    )
}

/// Exchanges sorted by stream id, for comparisons that do not care about emission order.
pub(crate) fn by_stream(mut v: Vec<HttpExchange>) -> Vec<HttpExchange> {
    v.sort_by_key(|x| x.stream_id);
    v
}

/// An HTTP/2 exchange with everything unset but the request: tests fill in the rest.
pub(crate) fn exchange(
    role: Role,
    stream: u32,
    method: &str,
    target: &str,
    host: &str,
) -> HttpExchange {
    HttpExchange {
        role,
        version: HttpVersion::Http2,
        method: method.into(),
        target: target.into(),
        host: Some(host.into()),
        status: None,
        request_body_size: 0,
        response_body_size: 0,
        trace_headers: TraceHeaders::default(),
        content_type: None,
        request_start_ns: 0,
        request_first_exit_ns: 0,
        request_end_ns: 0,
        response_start_ns: 0,
        response_end_ns: 0,
        request_tid: 0,
        request_head_truncated: false,
        request_target_truncated: false,
        response_head_truncated: false,
        request_body_size_unknown: false,
        response_body_size_unknown: false,
        stream_id: stream,
        seq: u64::from(stream),
        grpc_status: None,
        grpc_message: None,
        reset_code: None,
    }
}

/// Sets request segments `req` (first, last) and response segments `resp` (first, last) times.
pub(crate) fn timed(
    mut x: HttpExchange,
    req: (usize, usize),
    resp: (usize, usize),
) -> HttpExchange {
    x.request_start_ns = times(req.0).0;
    x.request_first_exit_ns = times(req.0).1;
    x.request_tid = times(req.0).2;
    x.request_end_ns = times(req.1).1;
    x.response_start_ns = times(resp.0).0;
    x.response_end_ns = times(resp.1).1;
    x
}

pub(crate) const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Every exchange in `got` agrees with the one for its stream in `want` wherever it claims to
/// know something: unknown is allowed (`None`, empty, or flagged), a different value is not.
/// Returns how many exchanges were fully known.
pub(crate) fn assert_never_wrong(got: &[HttpExchange], want: &[HttpExchange], what: &str) -> usize {
    let mut exact = 0;
    for g in got {
        let w = want
            .iter()
            .find(|w| w.stream_id == g.stream_id)
            .unwrap_or_else(|| panic!("{what}: stream {} was never sent", g.stream_id));
        let ctx = format!("{what}: stream {}: {g:#?}", g.stream_id);
        assert_eq!((g.role, g.version), (w.role, w.version), "{ctx}");
        let same_or = |a: &str, b: &str| a == b || (a.is_empty() && g.request_head_truncated);
        assert!(same_or(&g.method, &w.method), "method {ctx}");
        assert!(same_or(&g.target, &w.target), "target {ctx}");
        let opt = |a: &Option<String>, b: &Option<String>| a.is_none() || a == b;
        assert!(opt(&g.host, &w.host), "host {ctx}");
        assert!(opt(&g.content_type, &w.content_type), "content-type {ctx}");
        let t = (&g.trace_headers, &w.trace_headers);
        assert!(opt(&t.0.traceparent, &t.1.traceparent), "traceparent {ctx}");
        assert!(g.status.is_none() || g.status == w.status, "status {ctx}");
        assert!(
            g.grpc_status.is_none() || g.grpc_status == w.grpc_status,
            "grpc {ctx}"
        );
        assert!(
            g.request_body_size == w.request_body_size
                || (g.request_body_size == 0 && g.request_body_size_unknown),
            "request body {ctx}"
        );
        assert!(
            g.response_body_size == w.response_body_size
                || g.response_body_size_unknown
                || g.status.is_none()
                || g.response_head_truncated,
            "response body {ctx}"
        );
        if *g == *w {
            exact += 1;
        }
    }
    exact
}

/// A frame.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK: an integer with a `prefix`-bit prefix, the first byte's other bits `first`.
pub(crate) fn int(first: u8, prefix: u32, value: usize) -> Vec<u8> {
    let max = (1usize << prefix) - 1;
    if value < max {
        return vec![first | value as u8];
    }
    let mut out = vec![first | max as u8];
    let mut n = value - max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
    out
}

/// HPACK: a raw (not Huffman) string literal.
pub(crate) fn string(s: &str) -> Vec<u8> {
    let mut out = int(0, 7, s.len());
    out.extend_from_slice(s.as_bytes());
    out
}

/// HPACK: a literal with incremental indexing and a new name, raw strings.
pub(crate) fn lit(name: &str, value: &str) -> Vec<u8> {
    [vec![0x40], string(name), string(value)].concat()
}

/// HPACK: a literal with incremental indexing naming static entry `idx`.
pub(crate) fn lit_named(idx: usize, value: &str) -> Vec<u8> {
    [int(0x40, 6, idx), string(value)].concat()
}

/// The client preface followed by an empty SETTINGS frame.
pub(crate) fn preface() -> Vec<u8> {
    let mut b = mop_protocol::http2::PREFACE.to_vec();
    b.extend(frame(4, 0, 0, &[]));
    b
}
