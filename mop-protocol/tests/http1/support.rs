//! Fixture loading and feeding helpers.

use std::path::PathBuf;

use mop_protocol::http1::{Http1Connection, Http1Limits};
use mop_protocol::{Direction, HttpExchange, HttpVersion, Role, Segment, TraceHeaders};

/// Who recorded bytes belong to: `true` for client to server.
pub(crate) type Recorded = Vec<(bool, Vec<u8>)>;

/// Reads `tests/fixtures/http1/<name>.seg` (format in `record.py` there).
pub(crate) fn fixture(name: &str) -> Recorded {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "http1",
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
}

/// Timestamps of recorded segment `i`: entry, exit, thread.
pub(crate) fn times(i: usize) -> (u64, u64, u32) {
    let enter = 1_000 * (i as u64 + 1);
    (enter, enter + 100, 100 + i as u32)
}

/// Close timestamp used by the helpers.
pub(crate) const CLOSE_NS: u64 = 999_999;

/// One piece of a recorded segment to feed: `(segment index, client_to_server, head, gap, tail)`.
pub(crate) struct Piece<'a> {
    pub(crate) index: usize,
    pub(crate) c2s: bool,
    pub(crate) head: &'a [u8],
    pub(crate) gap: u64,
    pub(crate) tail: &'a [u8],
}

/// Feeds pieces (all pieces of one recorded segment get that segment's timestamps), closes.
pub(crate) fn run_pieces<'a>(
    side: Side,
    limits: Http1Limits,
    pieces: impl IntoIterator<Item = Piece<'a>>,
) -> (Vec<HttpExchange>, Http1Connection) {
    let mut conn = Http1Connection::new(limits);
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for p in pieces {
        let (enter_ns, exit_ns, tid) = times(p.index);
        let seg = Segment {
            head: p.head,
            gap: p.gap,
            tail: p.tail,
            enter_ns,
            exit_ns,
            tid,
        };
        conn.feed(side.dir(p.c2s), &seg, &mut out);
        conn.drain_starts(&mut starts);
    }
    conn.on_close(CLOSE_NS, &mut out);
    check_starts(&starts, &mut out);
    (out, conn)
}

/// Feeds every recorded segment whole.
pub(crate) fn run(side: Side, rec: &Recorded) -> (Vec<HttpExchange>, Http1Connection) {
    run_pieces(
        side,
        Http1Limits::default(),
        rec.iter()
            .enumerate()
            .map(|(i, (c2s, b))| whole(i, *c2s, b)),
    )
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

/// What the kernel gives for a buffer of `b` with a capture window of `window` bytes and a
/// 16-byte tail.
pub(crate) fn captured(index: usize, c2s: bool, b: &[u8], window: usize) -> Piece<'_> {
    if b.len() <= window {
        return whole(index, c2s, b);
    }
    let tail = (b.len() - window).min(16);
    Piece {
        index,
        c2s,
        head: &b[..window],
        gap: (b.len() - window - tail) as u64,
        tail: &b[b.len() - tail..],
    }
}

/// Feeds every recorded segment as the kernel would capture it with `window`.
pub(crate) fn run_window(
    side: Side,
    rec: &Recorded,
    window: usize,
) -> (Vec<HttpExchange>, Http1Connection) {
    run_pieces(
        side,
        Http1Limits::default(),
        rec.iter()
            .enumerate()
            .map(|(i, (c2s, b))| captured(i, *c2s, b, window)),
    )
}

/// An exchange with everything unset but the request line: tests fill in the rest.
pub(crate) fn exchange(role: Role, method: &str, target: &str, host: Option<&str>) -> HttpExchange {
    HttpExchange {
        role,
        version: HttpVersion::Http11,
        method: method.into(),
        target: target.into(),
        host: host.map(Into::into),
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
        stream_id: 0,
        seq: 0,
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

/// A `Segment` of whole bytes at time index `i`.
pub(crate) fn seg(i: usize, b: &[u8]) -> Segment<'_> {
    let (enter_ns, exit_ns, tid) = times(i);
    Segment {
        head: b,
        gap: 0,
        tail: &[],
        enter_ns,
        exit_ns,
        tid,
    }
}

/// Every exchange was announced by a start marker with its sequence number, role, thread,
/// times and trace headers, and sequence numbers count requests in order; then `seq` is
/// cleared so that expectations need not spell it.
pub(crate) fn check_starts(starts: &[mop_protocol::RequestStart], out: &mut [HttpExchange]) {
    for (i, s) in starts.iter().enumerate() {
        assert_eq!(s.seq, i as u64, "start markers count requests in order");
    }
    for x in out.iter_mut() {
        let start = starts
            .iter()
            .find(|s| s.seq == x.seq)
            .unwrap_or_else(|| panic!("no start marker for {x:?}"));
        assert_eq!(
            *start,
            mop_protocol::RequestStart::of(x),
            "start marker of {x:?}"
        );
        x.seq = 0;
    }
}
