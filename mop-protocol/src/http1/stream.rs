//! One direction of a connection: a state machine over captured bytes and uncaptured gaps.

use std::mem;

use super::chunked::{ChunkPhase, EndWatch, parse_chunk_size};
use super::connection::Shared;
use super::error::ParseError;
use super::head::{
    Framing, Head, StartLine, find_head_end, looks_like_request, looks_like_response, parse_head,
    start_prefix_ok,
};
use crate::exchange::{HttpExchange, HttpVersion, Role, TraceHeaders};
use crate::segment::{Direction, Segment};

/// The segment being parsed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub(crate) dir: Direction,
    pub(crate) enter_ns: u64,
    pub(crate) exit_ns: u64,
    pub(crate) tid: u32,
}

/// What a segment did that the other direction cares about.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Events {
    /// A request head was parsed.
    pub(crate) request_started: bool,
    /// The connection stopped speaking HTTP/1.
    pub(crate) tunnel: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Between messages: the next byte starts a request or status line.
    #[default]
    Idle,
    /// A header block arriving over several segments, buffered.
    Head,
    /// Inside a body of known remaining length.
    Body { remaining: u64 },
    /// Inside a chunked body.
    Chunk(ChunkPhase),
    /// Inside a body that ends when the connection closes.
    UntilClose,
    /// Inside a message whose end cannot be found from its framing (head cut by the capture
    /// window, invalid framing, chunk framing lost): every segment belongs to it until one
    /// starts a message. With `watch`, a chunked body that ends is noticed from its last bytes.
    Absorb { watch: bool },
    /// Lost: skipping segments until one starts a message.
    Resync,
    /// No longer HTTP/1.
    Tunnel,
}

/// The message being parsed: a request, or a response and the request it answers.
#[derive(Clone, Copy, Debug)]
struct Msg {
    request: bool,
    /// Pending request; `None` for a response nobody waits for, and for interim responses.
    seq: Option<u64>,
}

/// Parser state of one direction.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    phase: Phase,
    /// A partial header block or chunk line, at most `Http1Limits::max_head_bytes`.
    buf: Vec<u8>,
    /// How much of `buf` was already searched for the end of the header block.
    scanned: usize,
    /// The start line in `buf` is complete (and was plausible).
    first_line_done: bool,
    /// Entry time and thread of the segment holding the first byte of the current head.
    head_enter_ns: u64,
    head_exit_ns: u64,
    head_tid: u32,
    msg: Option<Msg>,
    /// After an interim (1xx) response: the request still waiting for its final response.
    awaiting_final: Option<u64>,
    watch: EndWatch,
}

/// True when a segment starts a message beyond doubt: a whole known method and a target
/// character, or a whole status code.
fn starts_message(head: &[u8]) -> bool {
    let request = looks_like_request(head)
        && head
            .iter()
            .position(|&b| b == b' ')
            .is_some_and(|sp| sp + 1 < head.len());
    request || (head.len() >= 12 && looks_like_response(head))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn find_crlfcrlf(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

impl Stream {
    pub(crate) fn feed(
        &mut self,
        cx: &Ctx,
        seg: &Segment<'_>,
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
    ) -> Events {
        let mut ev = Events::default();
        match self.phase {
            Phase::Resync => {
                if looks_like_request(seg.head) || looks_like_response(seg.head) {
                    self.phase = Phase::Idle;
                } else {
                    sh.stats.skipped_segments += 1;
                    return ev;
                }
            }
            Phase::Absorb { .. } if starts_message(seg.head) => self.finish(sh, out),
            _ => {}
        }
        self.bytes(cx, seg.head, sh, out, &mut ev);
        let from = if seg.gap > 0 {
            self.gap(cx, seg.gap, seg.tail, sh, out, &mut ev)
        } else {
            0
        };
        self.bytes(cx, &seg.tail[from.min(seg.tail.len())..], sh, out, &mut ev);
        if self.phase == (Phase::Absorb { watch: true }) && self.watch.ends_body() {
            self.finish(sh, out);
        }
        ev
    }

    /// Ends a response that is being absorbed (its end unknown): the next request arrived.
    pub(crate) fn end_open_response(&mut self, sh: &mut Shared, out: &mut Vec<HttpExchange>) {
        if matches!(self.phase, Phase::Absorb { .. }) && self.msg.is_some_and(|m| !m.request) {
            self.finish(sh, out);
        }
    }

    /// The connection closed.
    pub(crate) fn close(&mut self, sh: &mut Shared, out: &mut Vec<HttpExchange>) {
        match self.phase {
            Phase::UntilClose | Phase::Absorb { .. } => self.finish(sh, out),
            Phase::Body { .. } | Phase::Chunk(_) => {
                sh.stats.record(ParseError::IncompleteAtClose);
                self.finish(sh, out);
            }
            Phase::Head => sh.stats.record(ParseError::IncompleteAtClose),
            Phase::Idle | Phase::Resync | Phase::Tunnel => {}
        }
        *self = Self {
            buf: mem::take(&mut self.buf),
            ..Self::default()
        };
        self.buf.clear();
    }

    fn bytes(
        &mut self,
        cx: &Ctx,
        mut data: &[u8],
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
        ev: &mut Events,
    ) {
        while !data.is_empty() {
            data = match self.phase {
                Phase::Idle => self.idle(cx, data, sh, out, ev),
                Phase::Head => self.head_more(cx, data, sh, out, ev),
                Phase::Body { remaining } => {
                    let n = remaining.min(data.len() as u64);
                    self.progress(sh, cx, n);
                    if n == remaining {
                        self.finish(sh, out);
                    } else {
                        self.phase = Phase::Body {
                            remaining: remaining - n,
                        };
                    }
                    &data[n as usize..]
                }
                Phase::Chunk(c) => self.chunk(cx, c, data, sh, out),
                Phase::UntilClose => {
                    self.progress(sh, cx, data.len() as u64);
                    &[]
                }
                Phase::Absorb { watch } => {
                    self.touch(sh, cx);
                    if watch {
                        self.watch.push(data);
                    }
                    &[]
                }
                Phase::Resync | Phase::Tunnel => &[],
            };
        }
    }

    /// An uncaptured gap of `n` bytes, followed by `tail`. Returns where in `tail` parsing goes on.
    fn gap(
        &mut self,
        cx: &Ctx,
        n: u64,
        tail: &[u8],
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
        ev: &mut Events,
    ) -> usize {
        match self.phase {
            Phase::Idle => {
                sh.stats.record(ParseError::LostSync);
                self.phase = Phase::Resync;
                tail.len()
            }
            Phase::Head => self.truncated_head(cx, tail, sh, out, ev),
            Phase::Body { remaining } if n < remaining => {
                self.progress(sh, cx, n);
                self.phase = Phase::Body {
                    remaining: remaining - n,
                };
                0
            }
            Phase::Body { remaining } => {
                self.progress(sh, cx, remaining);
                self.finish(sh, out);
                if n == remaining {
                    return 0;
                }
                sh.stats.record(ParseError::LostSync);
                self.phase = Phase::Resync;
                tail.len()
            }
            Phase::Chunk(ChunkPhase::Data { remaining }) if n <= remaining => {
                self.progress(sh, cx, n);
                self.phase = if n == remaining {
                    Phase::Chunk(ChunkPhase::DataEnd { need: 2 })
                } else {
                    Phase::Chunk(ChunkPhase::Data {
                        remaining: remaining - n,
                    })
                };
                0
            }
            Phase::Chunk(_) => {
                self.absorb(sh, cx, true, None);
                0
            }
            Phase::UntilClose => {
                self.progress(sh, cx, n);
                0
            }
            Phase::Absorb { .. } => {
                self.touch(sh, cx);
                self.watch.reset();
                0
            }
            Phase::Resync | Phase::Tunnel => tail.len(),
        }
    }

    fn idle<'d>(
        &mut self,
        cx: &Ctx,
        data: &'d [u8],
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
        ev: &mut Events,
    ) -> &'d [u8] {
        let skip = data
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let data = &data[skip..];
        if data.is_empty() {
            return data;
        }
        if !start_prefix_ok(data) {
            sh.stats.record(ParseError::UnexpectedBytes);
            self.phase = Phase::Resync;
            return &[];
        }
        self.head_enter_ns = cx.enter_ns;
        self.head_exit_ns = cx.exit_ns;
        self.head_tid = cx.tid;
        // Fast path: the whole header block is in `data`; parse it in place.
        if let Some(end) = find_head_end(data, 0)
            && end <= sh.limits.max_head_bytes
        {
            if let Some(framing) = self.open(cx, &data[..end], true, sh, out, ev) {
                self.enter_body(cx, framing, sh, out, ev);
            }
            return &data[end..];
        }
        self.phase = Phase::Head;
        self.buf.clear();
        self.scanned = 0;
        self.first_line_done = false;
        self.head_more(cx, data, sh, out, ev)
    }

    /// More bytes of a header block that arrives in pieces.
    fn head_more<'d>(
        &mut self,
        cx: &Ctx,
        data: &'d [u8],
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
        ev: &mut Events,
    ) -> &'d [u8] {
        let max = sh.limits.max_head_bytes;
        let old = self.buf.len();
        let take = data.len().min(max.saturating_sub(old));
        self.buf.extend_from_slice(&data[..take]);
        if !self.first_line_plausible(old) {
            sh.stats.record(ParseError::UnexpectedBytes);
            self.buf.clear();
            self.phase = Phase::Resync;
            return &[];
        }
        if let Some(end) = find_head_end(&self.buf, self.scanned.saturating_sub(2)) {
            let buf = mem::take(&mut self.buf);
            if let Some(framing) = self.open(cx, &buf[..end], true, sh, out, ev) {
                self.enter_body(cx, framing, sh, out, ev);
            }
            self.buf = buf;
            self.buf.clear();
            return &data[end - old..];
        }
        self.scanned = self.buf.len();
        if self.buf.len() < max {
            return &[];
        }
        // Over the limit: parse what fits, then treat it like a head cut by the window.
        sh.stats.record(ParseError::HeadTooLarge);
        sh.stats.truncated_heads += 1;
        let buf = mem::take(&mut self.buf);
        if self.open(cx, &buf, false, sh, out, ev).is_some() {
            self.absorb(sh, cx, false, None);
        }
        self.buf = buf;
        self.buf.clear();
        &data[take..]
    }

    /// Rejects, as soon as it shows, a start line that cannot become one, so that garbage is not
    /// buffered up to the limit.
    fn first_line_plausible(&mut self, old: usize) -> bool {
        if self.first_line_done {
            return true;
        }
        let new = &self.buf[old..];
        let (line, done) = match new.iter().position(|&b| b == b'\n') {
            Some(i) => (&new[..i], true),
            None => (new, false),
        };
        if line
            .iter()
            .any(|&b| (b < b' ' && b != b'\r' && b != b'\t') || b == 0x7f)
        {
            return false;
        }
        self.first_line_done = done;
        self.buf.len() > 64 || start_prefix_ok(&self.buf)
    }

    /// A header block whose end was not captured: a gap follows the captured part in `buf`.
    fn truncated_head(
        &mut self,
        cx: &Ctx,
        tail: &[u8],
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
        ev: &mut Events,
    ) -> usize {
        sh.stats.truncated_heads += 1;
        let buf = mem::take(&mut self.buf);
        let framing = self.open(cx, &buf, false, sh, out, ev);
        self.buf = buf;
        self.buf.clear();
        let Some(framing) = framing else {
            return tail.len();
        };
        // The block ended in the gap or in the tail. When the tail holds the empty line, the
        // message goes on right after it; otherwise where it ends is unknown.
        if let Some(end) = find_crlfcrlf(tail) {
            self.enter_body(cx, framing, sh, out, ev);
            return end;
        }
        match framing {
            Framing::Empty => {
                self.finish(sh, out);
                self.phase = Phase::Resync;
                tail.len()
            }
            Framing::Length(n) => {
                self.absorb(sh, cx, false, Some(n));
                0
            }
            Framing::Chunked => {
                self.absorb(sh, cx, true, None);
                0
            }
            Framing::Unknown => {
                self.absorb(sh, cx, false, None);
                0
            }
            Framing::UntilClose => {
                self.mark_body_unknown(sh);
                self.phase = Phase::UntilClose;
                tail.len()
            }
            Framing::Tunnel => {
                self.enter_body(cx, framing, sh, out, ev);
                tail.len()
            }
        }
    }

    /// Parses a header block and opens its message: queues a request, or attaches a response
    /// to the request it answers. Returns the body framing, or `None` when the start line is
    /// unusable (the stream then resynchronises).
    fn open(
        &mut self,
        cx: &Ctx,
        bytes: &[u8],
        complete: bool,
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
        ev: &mut Events,
    ) -> Option<Framing> {
        let head = match parse_head(bytes, complete) {
            Ok(h) => h,
            Err(e) => {
                sh.stats.record(e);
                self.msg = None;
                self.phase = Phase::Resync;
                return None;
            }
        };
        match head.start {
            StartLine::Request {
                method,
                target,
                cut,
            } => {
                let (framing, problem) = head.fields.request_framing();
                if let Some(p) = problem {
                    sh.stats.record(p);
                }
                let exchange = self.request_exchange(cx, &head, method, target, cut, complete);
                let seq = sh.push_request(
                    cx.dir,
                    method == b"HEAD",
                    method == b"CONNECT",
                    exchange,
                    cx.exit_ns,
                    out,
                );
                self.msg = Some(Msg {
                    request: true,
                    seq: Some(seq),
                });
                ev.request_started = true;
                Some(framing)
            }
            StartLine::Response { status } => {
                let seq = self
                    .awaiting_final
                    .take()
                    .filter(|&s| sh.get(s).is_some())
                    .or_else(|| sh.match_response(cx.dir));
                if seq.is_none() {
                    sh.stats.record(ParseError::ResponseWithoutRequest);
                }
                let (head_request, connect_request) = seq
                    .and_then(|s| sh.get(s))
                    .map_or((false, false), |p| (p.head_request, p.connect_request));
                let (framing, problem) = match status {
                    Some(code) if (100..200).contains(&code) && code != 101 => {
                        // Interim: the final response is still to come.
                        self.awaiting_final = seq;
                        self.msg = Some(Msg {
                            request: false,
                            seq: None,
                        });
                        return Some(Framing::Empty);
                    }
                    // A cut head without a length may only have lost it: not close-delimited.
                    Some(code) => {
                        match head
                            .fields
                            .response_framing(code, head_request, connect_request)
                        {
                            (Framing::UntilClose, p)
                                if !complete && !head.fields.transfer_encoding =>
                            {
                                (Framing::Unknown, p)
                            }
                            other => other,
                        }
                    }
                    None => (Framing::Unknown, Some(ParseError::TruncatedStartLine)),
                };
                if let Some(p) = problem {
                    sh.stats.record(p);
                }
                if let Some(p) = seq.and_then(|s| sh.get(s)) {
                    p.response_started = true;
                    let x = &mut p.exchange;
                    x.status = status;
                    x.response_start_ns = self.head_enter_ns;
                    x.response_end_ns = cx.exit_ns;
                    x.response_head_truncated = !complete;
                }
                self.msg = Some(Msg {
                    request: false,
                    seq,
                });
                Some(framing)
            }
        }
    }

    fn request_exchange(
        &self,
        cx: &Ctx,
        head: &Head<'_>,
        method: &[u8],
        target: &[u8],
        cut: bool,
        complete: bool,
    ) -> HttpExchange {
        let f = &head.fields;
        let keep = |v: Option<&[u8]>| v.map(lossy);
        HttpExchange {
            role: match cx.dir {
                Direction::Ingress => Role::Server,
                Direction::Egress => Role::Client,
            },
            version: head.version.unwrap_or(HttpVersion::Http11),
            method: lossy(method),
            target: lossy(target),
            host: keep(f.host),
            status: None,
            request_body_size: 0,
            response_body_size: 0,
            trace_headers: TraceHeaders {
                traceparent: keep(f.traceparent),
                tracestate: keep(f.tracestate),
                b3: keep(f.b3),
                x_b3_traceid: keep(f.x_b3_traceid),
                x_b3_spanid: keep(f.x_b3_spanid),
                x_b3_parentspanid: keep(f.x_b3_parentspanid),
                x_b3_sampled: keep(f.x_b3_sampled),
            },
            content_type: keep(f.content_type),
            request_start_ns: self.head_enter_ns,
            request_first_exit_ns: self.head_exit_ns,
            request_end_ns: cx.exit_ns,
            response_start_ns: 0,
            response_end_ns: 0,
            request_tid: self.head_tid,
            request_head_truncated: !complete,
            request_target_truncated: cut,
            response_head_truncated: false,
            request_body_size_unknown: false,
            response_body_size_unknown: false,
            stream_id: 0,
            grpc_status: None,
            grpc_message: None,
            reset_code: None,
        }
    }

    /// Starts the body of a message whose head was just parsed.
    fn enter_body(
        &mut self,
        cx: &Ctx,
        framing: Framing,
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
        ev: &mut Events,
    ) {
        match framing {
            Framing::Empty => self.finish(sh, out),
            Framing::Length(n) => self.phase = Phase::Body { remaining: n },
            Framing::Chunked => {
                self.buf.clear();
                self.phase = Phase::Chunk(ChunkPhase::Size);
            }
            Framing::UntilClose => self.phase = Phase::UntilClose,
            Framing::Tunnel => {
                self.finish(sh, out);
                self.phase = Phase::Tunnel;
                ev.tunnel = true;
            }
            Framing::Unknown => self.absorb(sh, cx, false, None),
        }
    }

    fn chunk<'d>(
        &mut self,
        cx: &Ctx,
        c: ChunkPhase,
        data: &'d [u8],
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
    ) -> &'d [u8] {
        match c {
            ChunkPhase::Data { remaining } => {
                let n = remaining.min(data.len() as u64);
                self.progress(sh, cx, n);
                self.phase = if n == remaining {
                    Phase::Chunk(ChunkPhase::DataEnd { need: 2 })
                } else {
                    Phase::Chunk(ChunkPhase::Data {
                        remaining: remaining - n,
                    })
                };
                &data[n as usize..]
            }
            ChunkPhase::DataEnd { need } => {
                self.touch(sh, cx);
                match (need, data[0]) {
                    (2, b'\r') => self.phase = Phase::Chunk(ChunkPhase::DataEnd { need: 1 }),
                    (_, b'\n') => self.phase = Phase::Chunk(ChunkPhase::Size),
                    _ => {
                        sh.stats.record(ParseError::InvalidChunkFraming);
                        self.absorb(sh, cx, true, None);
                        return data;
                    }
                }
                &data[1..]
            }
            ChunkPhase::Size | ChunkPhase::Trailer => {
                self.touch(sh, cx);
                let nl = data.iter().position(|&b| b == b'\n');
                let next = nl.map_or(data.len(), |i| i + 1);
                if nl.is_none() || !self.buf.is_empty() {
                    if self.buf.len() + next > sh.limits.max_head_bytes {
                        sh.stats.record(ParseError::ChunkLineTooLong);
                        self.buf.clear();
                        self.absorb(sh, cx, true, None);
                        return data;
                    }
                    self.buf.extend_from_slice(&data[..next]);
                    if nl.is_none() {
                        return &[];
                    }
                }
                let buf = mem::take(&mut self.buf);
                let line = if buf.is_empty() {
                    &data[..next]
                } else {
                    &buf[..]
                };
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.chunk_line(cx, c, line, sh, out);
                self.buf = buf;
                self.buf.clear();
                &data[next..]
            }
        }
    }

    fn chunk_line(
        &mut self,
        cx: &Ctx,
        c: ChunkPhase,
        line: &[u8],
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
    ) {
        if c == ChunkPhase::Trailer {
            // Trailer fields are not kept; the empty line ends the message.
            if line.is_empty() {
                self.finish(sh, out);
            }
            return;
        }
        match parse_chunk_size(line) {
            Ok(0) => self.phase = Phase::Chunk(ChunkPhase::Trailer),
            Ok(n) => self.phase = Phase::Chunk(ChunkPhase::Data { remaining: n }),
            Err(e) => {
                sh.stats.record(e);
                self.absorb(sh, cx, true, None);
            }
        }
    }

    /// The current message's end can no longer be found from its framing. `body` is its body
    /// size when known from its head; otherwise the size is marked unknown.
    fn absorb(&mut self, sh: &mut Shared, cx: &Ctx, watch: bool, body: Option<u64>) {
        self.phase = Phase::Absorb { watch };
        self.watch.reset();
        self.buf.clear();
        self.touch(sh, cx);
        match body {
            Some(n) => {
                if let Some(x) = self.exchange(sh) {
                    *self.body_size(x) = n;
                }
            }
            None => self.mark_body_unknown(sh),
        }
    }

    fn mark_body_unknown(&self, sh: &mut Shared) {
        let request = self.msg.is_some_and(|m| m.request);
        if let Some(x) = self.exchange(sh) {
            if request {
                x.request_body_size = 0;
                x.request_body_size_unknown = true;
            } else {
                x.response_body_size = 0;
                x.response_body_size_unknown = true;
            }
        }
    }

    /// The current message is complete: a response is emitted with its request.
    fn finish(&mut self, sh: &mut Shared, out: &mut Vec<HttpExchange>) {
        if let Some(Msg {
            request: false,
            seq: Some(seq),
        }) = self.msg
        {
            sh.emit(seq, out);
        }
        self.msg = None;
        self.phase = Phase::Idle;
        self.buf.clear();
    }

    fn exchange<'s>(&self, sh: &'s mut Shared) -> Option<&'s mut HttpExchange> {
        let seq = self.msg?.seq?;
        sh.get(seq).map(|p| &mut p.exchange)
    }

    fn body_size<'x>(&self, x: &'x mut HttpExchange) -> &'x mut u64 {
        if self.msg.is_some_and(|m| m.request) {
            &mut x.request_body_size
        } else {
            &mut x.response_body_size
        }
    }

    /// The current segment carried bytes of the current message.
    fn touch(&self, sh: &mut Shared, cx: &Ctx) {
        self.progress(sh, cx, 0);
    }

    /// The current segment carried `body` body bytes of the current message.
    fn progress(&self, sh: &mut Shared, cx: &Ctx, body: u64) {
        let request = self.msg.is_some_and(|m| m.request);
        if let Some(x) = self.exchange(sh) {
            if request {
                x.request_end_ns = cx.exit_ns;
                if !x.request_body_size_unknown {
                    x.request_body_size += body;
                }
            } else {
                x.response_end_ns = cx.exit_ns;
                if !x.response_body_size_unknown {
                    x.response_body_size += body;
                }
            }
        }
    }
}
