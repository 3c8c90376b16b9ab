//! Per-connection state: which protocol a connection speaks, and its parser.
//!
//! One tracker is owned by the capture task; it is fed every decoded record in ring order and
//! hands completed exchanges, with their connection's addresses, to a callback. Memory is
//! bounded: at most `max_connections` entries, the least recently active evicted first.

use std::{collections::HashMap, net::SocketAddr};

use mop_common::{EventKind, TraceCtx};
use mop_protocol::{Direction, HttpExchange, RequestStart};

use super::{
    event::{RawEvent, socket_addrs},
    parser::{ParseErrors, Parser, ParserLimits, Protocol, sniff},
    stream::{Alignment, StreamPosition, trim_front},
};

/// An exchange with the connection it happened on.
#[derive(Clone, Debug)]
pub struct ConnExchange {
    /// The instrumented process.
    pub pid: u32,
    /// The connection (unique per boot).
    pub conn_id: u64,
    /// The process's end of the connection.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    /// The request and response.
    pub exchange: HttpExchange,
    /// Read as TLS plaintext (the scheme is `https`).
    pub tls: bool,
}

struct Connection {
    local: SocketAddr,
    remote: SocketAddr,
    protocol: Protocol,
    last_seen_ns: u64,
    /// Plaintext from the TLS library has been seen: socket bytes (ciphertext) are ignored
    /// from now on, and the protocol was decided on the plaintext.
    tls: bool,
    /// Stream positions of the ingress and egress directions.
    positions: [StreamPosition; 2],
    /// The context the kernel gave the next request starting in each direction (ingress,
    /// egress) when trace context travels in TCP options.
    kernel_ctx: [Option<TraceCtx>; 2],
}

/// A request that just started on a connection (for trace context, before it completes).
#[derive(Clone, Debug)]
pub struct ConnStart {
    /// The instrumented process.
    pub pid: u32,
    /// The connection.
    pub conn_id: u64,
    /// The process's end of the connection.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    /// The request's start marker.
    pub start: RequestStart,
    /// The peer's end of this connection belongs to an instrumented process too (both ends
    /// are seen, so the other side's start will arrive).
    pub peer_tracked: bool,
    /// The ids the kernel gave this request (TCP-option propagation): its span id travels to
    /// the server in the request's first packet, so the span must use it.
    pub kernel_ctx: Option<TraceCtx>,
}

/// What the tracker reports, in the order it learns it.
#[derive(Clone, Debug)]
pub enum Observed {
    /// A request began.
    Start(ConnStart),
    /// A request and its response completed.
    Done(ConnExchange),
}

/// Key of a tracked connection: the kernel's connection id is unique per boot, the pid keeps
/// per-process cleanup cheap to express.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    pid: u32,
    conn_id: u64,
}

/// Counters the tracker accumulates between reads by the capture stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Parse errors, per protocol.
    pub errors: ParseErrors,
    /// Connections evicted because the table was full.
    pub evicted: u64,
    /// Data records the kernel never reported (seen as gaps in a stream).
    pub stream_gaps: u64,
}

/// The connection table.
pub struct ConnTracker {
    conns: HashMap<Key, Connection>,
    /// How many tracked connections have each (local, remote) pair: tells whether the other
    /// end of a connection is instrumented too.
    tuples: HashMap<(SocketAddr, SocketAddr), u32>,
    starts: Vec<RequestStart>,
    max_connections: usize,
    limits: ParserLimits,
    scratch: Vec<HttpExchange>,
    stats: TrackerStats,
}

impl ConnTracker {
    /// An empty table holding at most `max_connections` connections.
    pub fn new(max_connections: usize, limits: ParserLimits) -> Self {
        Self {
            conns: HashMap::new(),
            tuples: HashMap::new(),
            starts: Vec::new(),
            max_connections: max_connections.max(1),
            limits,
            scratch: Vec::with_capacity(8),
            stats: TrackerStats::default(),
        }
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection is held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Returns the counters accumulated since the last call and resets them.
    pub fn take_stats(&mut self) -> TrackerStats {
        std::mem::take(&mut self.stats)
    }

    /// Feeds one record; completed exchanges go to `emit`.
    pub fn on_event(&mut self, ev: &RawEvent<'_>, emit: &mut impl FnMut(Observed)) {
        let key = Key {
            pid: ev.header.pid,
            conn_id: ev.header.conn_id,
        };
        match ev.kind {
            EventKind::ConnOpen => {
                // A new connection id: nothing to carry over.
                self.insert(key, ev);
            }
            EventKind::Data => self.on_data(key, ev, emit),
            EventKind::TraceCtx => self.on_trace_ctx(key, ev),
            // Not about a connection: the capture stage routes exec reports to discovery.
            EventKind::ProcExec => {}
            EventKind::ConnClose => {
                if let Some(mut conn) = self.remove(&key) {
                    if let Protocol::Parsed(parser) = &mut conn.protocol {
                        parser.on_close(ev.header.exit_ns, &mut self.scratch);
                        self.stats.errors.add(parser.take_errors());
                    }
                    emit_done(&mut self.scratch, key, &conn, emit);
                }
            }
        }
    }

    /// Keeps the kernel's context for the request that starts in the record that follows.
    fn on_trace_ctx(&mut self, key: Key, ev: &RawEvent<'_>) {
        let Some(ctx) = ev.trace_ctx() else {
            return;
        };
        if !self.conns.contains_key(&key) {
            self.insert(key, ev);
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.kernel_ctx[usize::from(ev.direction() == Direction::Egress)] = Some(ctx);
        }
    }

    fn on_data(&mut self, key: Key, ev: &RawEvent<'_>, emit: &mut impl FnMut(Observed)) {
        if !self.conns.contains_key(&key) {
            self.insert(key, ev);
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.last_seen_ns = ev.header.exit_ns;
        if ev.is_tls() != conn.tls {
            if conn.tls {
                // Ciphertext of a connection whose plaintext we read: never parsed.
                return;
            }
            // The first plaintext: whatever the ciphertext looked like does not count.
            conn.tls = true;
            conn.protocol = Protocol::Undecided(0);
        }
        let dir = ev.direction();
        let mut segment = ev.segment();
        if let Protocol::Undecided(seen) = conn.protocol {
            conn.protocol = sniff(&segment, seen, &self.limits);
        }
        if let Some(end) = ev.stream_seq() {
            let position = &mut conn.positions[usize::from(dir == Direction::Egress)];
            match position.place(end, ev.header.total_len) {
                Alignment::InOrder => {}
                Alignment::Duplicate => return,
                Alignment::Overlap(n) => segment = trim_front(&segment, n),
                Alignment::Gap(n) => {
                    self.stats.stream_gaps += 1;
                    if let Protocol::Parsed(parser) = &mut conn.protocol {
                        parser.lost(dir, &segment, n, &mut self.scratch);
                    }
                }
            }
        }
        let Protocol::Parsed(parser) = &mut conn.protocol else {
            return;
        };
        let next = parser.feed(dir, &segment, &self.limits, &mut self.scratch);
        parser.drain_starts(&mut self.starts);
        self.stats.errors.add(parser.take_errors());
        if let Some(next) = next {
            conn.protocol = next;
        }
        let (local, remote) = (conn.local, conn.remote);
        if !self.starts.is_empty() {
            let peer_tracked = self.tuples.contains_key(&(remote, local));
            for start in self.starts.drain(..) {
                // A request is read by servers and written by clients.
                let request_dir = usize::from(start.role == mop_protocol::Role::Client);
                let kernel_ctx = conn.kernel_ctx[request_dir].take();
                emit(Observed::Start(ConnStart {
                    pid: key.pid,
                    conn_id: key.conn_id,
                    local,
                    remote,
                    start,
                    peer_tracked,
                    kernel_ctx,
                }));
            }
        }
        emit_done(&mut self.scratch, key, conn, emit);
    }

    /// Removes a connection, keeping the tuple index in step.
    fn remove(&mut self, key: &Key) -> Option<Connection> {
        let conn = self.conns.remove(key)?;
        untrack_tuple(&mut self.tuples, &conn);
        Some(conn)
    }

    fn insert(&mut self, key: Key, ev: &RawEvent<'_>) {
        if self.conns.len() >= self.max_connections && !self.conns.contains_key(&key) {
            self.evict_oldest();
        }
        let (local, remote) = socket_addrs(&ev.header.addrs);
        if let Some(old) = self.conns.get(&key) {
            untrack_tuple(&mut self.tuples, old);
        }
        *self.tuples.entry((local, remote)).or_insert(0) += 1;
        self.conns.insert(
            key,
            Connection {
                local,
                remote,
                protocol: Protocol::Undecided(0),
                last_seen_ns: ev.header.exit_ns,
                tls: false,
                positions: [StreamPosition::default(); 2],
                kernel_ctx: [None; 2],
            },
        );
    }

    /// Drops the least recently active eighth of the table (amortises the scan).
    fn evict_oldest(&mut self) {
        let mut ages: Vec<u64> = self.conns.values().map(|c| c.last_seen_ns).collect();
        let n = (ages.len() / 8).max(1);
        let (_, cutoff, _) = ages.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        let before = self.conns.len();
        let tuples = &mut self.tuples;
        self.conns.retain(|_, c| {
            let keep = c.last_seen_ns > cutoff;
            if !keep {
                untrack_tuple(tuples, c);
            }
            keep
        });
        self.stats.evicted += (before - self.conns.len()) as u64;
    }

    /// Forgets every connection of a process that exited.
    pub fn forget_pid(&mut self, pid: u32) {
        let tuples = &mut self.tuples;
        self.conns.retain(|k, c| {
            let keep = k.pid != pid;
            if !keep {
                untrack_tuple(tuples, c);
            }
            keep
        });
    }

    /// Emits what the parsers of live connections stopped waiting for before `before_ns`
    /// (monotonic): see [`Parser::expire`].
    pub fn expire_waits(&mut self, before_ns: u64, emit: &mut impl FnMut(Observed)) {
        let keys: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.protocol, Protocol::Parsed(Parser::Http2(_))))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            if let Protocol::Parsed(parser) = &mut conn.protocol {
                parser.expire(before_ns, &mut self.scratch);
            }
            emit_done(&mut self.scratch, key, conn, emit);
        }
    }

    /// Drops connections idle since before `cutoff_ns` (monotonic), flushing what their parsers
    /// still hold as if they had closed.
    pub fn expire_idle(&mut self, cutoff_ns: u64, emit: &mut impl FnMut(Observed)) {
        let idle: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_seen_ns < cutoff_ns)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            if let Some(mut conn) = self.remove(&key) {
                if let Protocol::Parsed(parser) = &mut conn.protocol {
                    parser.on_close(conn.last_seen_ns, &mut self.scratch);
                    self.stats.errors.add(parser.take_errors());
                }
                emit_done(&mut self.scratch, key, &conn, emit);
            }
        }
    }
}

/// Hands every exchange the parsers left in `scratch` to `emit`, as exchanges of `conn`.
fn emit_done(
    scratch: &mut Vec<HttpExchange>,
    key: Key,
    conn: &Connection,
    emit: &mut impl FnMut(Observed),
) {
    for exchange in scratch.drain(..) {
        emit(Observed::Done(ConnExchange {
            pid: key.pid,
            conn_id: key.conn_id,
            local: conn.local,
            remote: conn.remote,
            exchange,
            tls: conn.tls,
        }));
    }
}

/// Forgets one connection of the tuple index.
fn untrack_tuple(tuples: &mut HashMap<(SocketAddr, SocketAddr), u32>, conn: &Connection) {
    let pair = (conn.local, conn.remote);
    if let Some(n) = tuples.get_mut(&pair) {
        *n -= 1;
        if *n == 0 {
            tuples.remove(&pair);
        }
    }
}

#[cfg(test)]
mod stream_tests {
    use mop_common::{
        DataEventHeader, EVENT_HEADER_LEN,
        event::{DIR_EGRESS, DIR_INGRESS, FLAG_STREAM_SEQ},
    };

    use super::*;

    /// A data record of `bytes` in `dir`, ending at stream position `end`.
    fn record(dir: u32, bytes: &[u8], end: u32, t: u64) -> Vec<u8> {
        // SAFETY: all-zero is a valid header.
        let mut h: DataEventHeader = unsafe { std::mem::zeroed() };
        h.kind = EventKind::Data as u32;
        h.direction = dir;
        h.pid = 7;
        h.conn_id = 1;
        h.enter_ns = t;
        h.exit_ns = t + 1;
        h.captured_len = bytes.len() as u32;
        h.total_len = bytes.len() as u64;
        h.flags = FLAG_STREAM_SEQ;
        h.seq_end = end;
        let mut out = vec![0u8; EVENT_HEADER_LEN];
        // SAFETY: the buffer holds a header.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<DataEventHeader>(), h) };
        out.extend_from_slice(bytes);
        out
    }

    fn feed(t: &mut ConnTracker, rec: &[u8], out: &mut Vec<ConnExchange>) {
        let ev = RawEvent::decode(rec).unwrap();
        t.on_event(&ev, &mut |x| {
            if let Observed::Done(x) = x {
                out.push(x);
            }
        });
    }

    #[test]
    fn a_lost_request_does_not_shift_the_responses() {
        let mut t = ConnTracker::new(16, ParserLimits::default());
        let mut out = Vec::new();
        let (r1, r2, r3) = (
            b"GET /1 HTTP/1.1\r\n\r\n",
            b"GET /2 HTTP/1.1\r\n\r\n",
            b"GET /3 HTTP/1.1\r\n\r\n",
        );
        let resp = |code: &str| format!("HTTP/1.1 {code} OK\r\nContent-Length: 0\r\n\r\n");
        let mut rin = 0u32;
        let mut rout = 0u32;
        rin += r1.len() as u32;
        feed(&mut t, &record(DIR_INGRESS, r1, rin, 10), &mut out);
        rout += resp("201").len() as u32;
        feed(
            &mut t,
            &record(DIR_EGRESS, resp("201").as_bytes(), rout, 20),
            &mut out,
        );
        // Request 2 and its response are never reported (the kernel skipped the program).
        rin += r2.len() as u32;
        rout += resp("202").len() as u32;
        rin += r3.len() as u32;
        feed(&mut t, &record(DIR_INGRESS, r3, rin, 50), &mut out);
        rout += resp("203").len() as u32;
        feed(
            &mut t,
            &record(DIR_EGRESS, resp("203").as_bytes(), rout, 60),
            &mut out,
        );
        let seen: Vec<(String, Option<u16>)> = out
            .iter()
            .map(|x| (x.exchange.target.clone(), x.exchange.status))
            .collect();
        assert_eq!(
            seen,
            vec![("/1".to_owned(), Some(201)), ("/3".to_owned(), Some(203))]
        );
        assert_eq!(t.take_stats().stream_gaps, 2);
    }

    #[test]
    fn bytes_reported_twice_are_parsed_once() {
        let mut t = ConnTracker::new(16, ParserLimits::default());
        let mut out = Vec::new();
        let req = b"GET /peek HTTP/1.1\r\n\r\n";
        let end = req.len() as u32;
        // A MSG_PEEK read does not move the stream; the real read returns the same bytes.
        feed(&mut t, &record(DIR_INGRESS, req, end, 10), &mut out);
        feed(&mut t, &record(DIR_INGRESS, req, end, 11), &mut out);
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        feed(
            &mut t,
            &record(DIR_EGRESS, resp, resp.len() as u32, 20),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].exchange.target, "/peek");
        assert_eq!(t.take_stats().stream_gaps, 0);
    }

    /// A trace-context record the kernel writes before the data of a request it gave ids.
    fn ctx_record(dir: u32, ctx: TraceCtx) -> Vec<u8> {
        let mut rec = record(dir, &[0; 32], 0, 5);
        // SAFETY: `record` wrote a header at the start of the buffer.
        let mut h: DataEventHeader =
            unsafe { std::ptr::read_unaligned(rec.as_ptr().cast::<DataEventHeader>()) };
        h.kind = EventKind::TraceCtx as u32;
        h.flags = 0;
        // SAFETY: as above.
        unsafe { std::ptr::write_unaligned(rec.as_mut_ptr().cast::<DataEventHeader>(), h) };
        // SAFETY: the payload area holds 32 bytes.
        unsafe {
            std::ptr::write_unaligned(rec[EVENT_HEADER_LEN..].as_mut_ptr().cast::<TraceCtx>(), ctx);
        };
        rec
    }

    #[test]
    fn the_kernel_context_goes_to_the_request_that_starts_next_and_only_to_it() {
        let mut t = ConnTracker::new(16, ParserLimits::default());
        let ctx = TraceCtx {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: [3; 8],
        };
        let mut starts = Vec::new();
        let mut on = |rec: &[u8], t: &mut ConnTracker| {
            let ev = RawEvent::decode(rec).unwrap();
            t.on_event(&ev, &mut |o| {
                if let Observed::Start(s) = o {
                    starts.push(s.kernel_ctx);
                }
            });
        };
        let req = b"GET /a HTTP/1.1\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        on(&ctx_record(DIR_INGRESS, ctx), &mut t);
        let n = req.len() as u32;
        on(&record(DIR_INGRESS, req, n, 10), &mut t);
        on(&record(DIR_EGRESS, resp, resp.len() as u32, 20), &mut t);
        // The next request came without a context (say, pipelined): it gets none.
        on(&record(DIR_INGRESS, req, 2 * n, 30), &mut t);
        assert_eq!(starts, vec![Some(ctx), None]);
    }
}
