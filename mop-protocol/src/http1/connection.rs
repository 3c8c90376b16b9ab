//! One TCP connection: two byte streams and the requests waiting for their responses.

use std::collections::VecDeque;

use super::error::{Http1Stats, ParseError};
use super::stream::{Ctx, Stream};
use crate::exchange::{HttpExchange, RequestStart};
use crate::segment::{Direction, Segment};

/// Bounds on what one connection's parser keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http1Limits {
    /// Largest header block buffered per direction while it arrives over several segments, and
    /// largest chunk-size or trailer line. A larger block is parsed as far as it goes, counted
    /// as [`ParseError::HeadTooLarge`], and treated like a block cut by the capture window.
    pub max_head_bytes: usize,
    /// Most requests waiting for a response (pipelining). One more pushes the oldest out,
    /// emitted with `status: None` and counted as [`ParseError::TooManyPending`].
    pub max_pending: usize,
}

impl Http1Limits {
    /// Default of [`Http1Limits::max_head_bytes`]: 16 KiB.
    pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
    /// Default of [`Http1Limits::max_pending`].
    pub const DEFAULT_MAX_PENDING: usize = 64;
}

impl Default for Http1Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: Self::DEFAULT_MAX_HEAD_BYTES,
            max_pending: Self::DEFAULT_MAX_PENDING,
        }
    }
}

/// A request waiting for (or receiving) its response.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) seq: u64,
    /// The direction the request travelled; its response travels the other way.
    pub(crate) req_dir: Direction,
    pub(crate) head_request: bool,
    pub(crate) connect_request: bool,
    /// The final response's head was parsed.
    pub(crate) response_started: bool,
    pub(crate) exchange: HttpExchange,
}

/// What both streams of a connection share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) limits: Http1Limits,
    pub(crate) stats: Http1Stats,
    pending: VecDeque<Pending>,
    next_seq: u64,
    /// Requests started since the caller last drained them.
    pub(crate) starts: Vec<RequestStart>,
}

impl Shared {
    /// Queues a request; returns its sequence number.
    pub(crate) fn push_request(
        &mut self,
        req_dir: Direction,
        head_request: bool,
        connect_request: bool,
        mut exchange: HttpExchange,
        now_ns: u64,
        out: &mut Vec<HttpExchange>,
    ) -> u64 {
        if self.pending.len() >= self.limits.max_pending.max(1) {
            let oldest = self
                .pending
                .iter()
                .position(|p| !p.response_started)
                .unwrap_or(0);
            if let Some(mut old) = self.pending.remove(oldest) {
                self.stats.record(ParseError::TooManyPending);
                if old.exchange.status.is_none() {
                    old.exchange.response_end_ns = now_ns;
                }
                self.stats.exchanges += 1;
                out.push(old.exchange);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        exchange.seq = seq;
        self.starts.push(RequestStart::of(&exchange));
        self.pending.push_back(Pending {
            seq,
            req_dir,
            head_request,
            connect_request,
            response_started: false,
            exchange,
        });
        seq
    }

    pub(crate) fn get(&mut self, seq: u64) -> Option<&mut Pending> {
        self.pending.iter_mut().find(|p| p.seq == seq)
    }

    /// The oldest request, sent the other way, whose response has not started.
    pub(crate) fn match_response(&self, response_dir: Direction) -> Option<u64> {
        let req_dir = response_dir.reverse();
        self.pending
            .iter()
            .find(|p| p.req_dir == req_dir && !p.response_started)
            .map(|p| p.seq)
    }

    /// Emits a completed exchange.
    pub(crate) fn emit(&mut self, seq: u64, out: &mut Vec<HttpExchange>) {
        if let Some(i) = self.pending.iter().position(|p| p.seq == seq)
            && let Some(p) = self.pending.remove(i)
        {
            self.stats.exchanges += 1;
            out.push(p.exchange);
        }
    }
}

/// The HTTP/1.0 and 1.1 parser of one TCP connection.
///
/// Feed it every captured segment of the connection, in order, with [`Http1Connection::feed`];
/// it pushes an [`HttpExchange`] whenever a response completes. Call
/// [`Http1Connection::on_close`] when the connection closes: it completes close-delimited
/// responses and emits the requests still waiting, with `status: None`.
///
/// Either direction may carry requests: a request read by the process (ingress) makes it the
/// server of that exchange, a request it wrote makes it the client; responses are matched to
/// the requests that went the other way, first in first out.
#[derive(Debug)]
pub struct Http1Connection {
    streams: [Stream; 2],
    shared: Shared,
    tunnel: bool,
}

impl Default for Http1Connection {
    fn default() -> Self {
        Self::new(Http1Limits::default())
    }
}

const fn index(dir: Direction) -> usize {
    match dir {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Http1Connection {
    /// A parser for a new connection.
    pub fn new(limits: Http1Limits) -> Self {
        Self {
            streams: [Stream::default(), Stream::default()],
            shared: Shared {
                limits,
                stats: Http1Stats::default(),
                pending: VecDeque::new(),
                next_seq: 0,
                starts: Vec::new(),
            },
            tunnel: false,
        }
    }

    /// Parses one captured syscall's bytes, moving in `dir`; completed exchanges are pushed to
    /// `out`.
    pub fn feed(&mut self, dir: Direction, seg: &Segment<'_>, out: &mut Vec<HttpExchange>) {
        if self.tunnel {
            return;
        }
        let cx = Ctx {
            dir,
            enter_ns: seg.enter_ns,
            exit_ns: seg.exit_ns,
            tid: seg.tid,
        };
        let i = index(dir);
        let ev = self.streams[i].feed(&cx, seg, &mut self.shared, out);
        if ev.tunnel {
            self.tunnel = true;
            self.shared.stats.upgrades += 1;
            return;
        }
        if ev.request_started {
            // A response whose end could not be seen ends, at the latest, when the next
            // request arrives.
            self.streams[1 - i].end_open_response(&mut self.shared, out);
        }
    }

    /// The connection closed at `ts_ns`: completes what the close completes and emits every
    /// request still waiting for a response, in order, with `status: None`.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<HttpExchange>) {
        for s in &mut self.streams {
            s.close(&mut self.shared, out);
        }
        while let Some(mut p) = self.shared.pending.pop_front() {
            if p.exchange.status.is_none() {
                p.exchange.response_start_ns = 0;
                p.exchange.response_end_ns = ts_ns;
            }
            self.shared.stats.exchanges += 1;
            out.push(p.exchange);
        }
        self.tunnel = false;
    }

    /// The counters so far.
    pub fn stats(&self) -> &Http1Stats {
        &self.shared.stats
    }

    /// The counters so far; resets them.
    pub fn take_stats(&mut self) -> Http1Stats {
        std::mem::take(&mut self.shared.stats)
    }

    /// Moves the requests started since the last call into `out` (bounded: one per request
    /// head parsed, so callers drain after every `feed`).
    pub fn drain_starts(&mut self, out: &mut Vec<RequestStart>) {
        out.append(&mut self.shared.starts);
    }

    /// Requests waiting for a response.
    pub fn pending(&self) -> usize {
        self.shared.pending.len()
    }

    /// True once the connection switched protocols (a 101 response or a CONNECT tunnel): the
    /// parser ignores everything after that, and the caller may hand the connection to another
    /// parser.
    pub fn is_tunnel(&self) -> bool {
        self.tunnel
    }

    /// The limits in force.
    pub fn limits(&self) -> &Http1Limits {
        &self.shared.limits
    }
}
