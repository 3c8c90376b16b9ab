//! One direction of a connection: a state machine over captured bytes and uncaptured gaps.

mod chunk;
mod open;

use std::mem;

use super::chunked::{ChunkPhase, EndWatch};
use super::connection::Shared;
use super::error::ParseError;
use super::head::{
    Framing, MAX_METHOD_LEN, find_head_end, is_ctl, looks_like_request, looks_like_response,
    start_prefix_ok,
};
use crate::exchange::HttpExchange;
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
    /// Exit time of that segment: when a server had the head in hand.
    head_exit_ns: u64,
    head_tid: u32,
    msg: Option<Msg>,
    /// After an interim (1xx) response: the request still waiting for its final response.
    awaiting_final: Option<u64>,
    watch: EndWatch,
}

/// True when a segment starts a message beyond doubt: a whole known method and a target
/// character, or a whole status code. A lost stream resynchronises only on such a segment (a
/// one-byte segment `D` after garbage is not taken for the start of `DELETE`).
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
                if starts_message(seg.head) {
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

    /// Takes up to `n` bytes of a body of known remaining length (a `Content-Length` body or
    /// one chunk's data); returns how many it took.
    fn consume_known(
        &mut self,
        sh: &mut Shared,
        cx: &Ctx,
        out: &mut Vec<HttpExchange>,
        n: u64,
    ) -> u64 {
        let (remaining, chunk) = match self.phase {
            Phase::Body { remaining } => (remaining, false),
            Phase::Chunk(ChunkPhase::Data { remaining }) => (remaining, true),
            _ => return 0,
        };
        let took = remaining.min(n);
        // A length-delimited body's size was set from its head; chunk data is counted.
        self.progress(sh, cx, if chunk { took } else { 0 });
        let left = remaining - took;
        match (chunk, left) {
            (false, 0) => self.finish(sh, out),
            (false, _) => self.phase = Phase::Body { remaining: left },
            (true, 0) => self.phase = Phase::Chunk(ChunkPhase::DataEnd { need: 2 }),
            (true, _) => self.phase = Phase::Chunk(ChunkPhase::Data { remaining: left }),
        }
        took
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
                Phase::Body { .. } => {
                    let n = self.consume_known(sh, cx, out, data.len() as u64);
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
            Phase::Body { .. } | Phase::Chunk(ChunkPhase::Data { .. }) => {
                let body = matches!(self.phase, Phase::Body { .. });
                if self.consume_known(sh, cx, out, n) == n {
                    return 0;
                }
                // The gap goes past the end of the body or chunk.
                if !body {
                    self.absorb(sh, cx, true, None);
                    return 0;
                }
                sh.stats.record(ParseError::LostSync);
                self.phase = Phase::Resync;
                tail.len()
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
        if let Err(e) = self.first_line_plausible(old) {
            sh.stats.record(e);
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
    /// buffered up to the limit. Agrees with what [`parse_head`](super::head::parse_head) and
    /// the fast path in [`Stream::idle`] say of the same bytes in one piece.
    fn first_line_plausible(&mut self, old: usize) -> Result<(), ParseError> {
        if self.first_line_done {
            return Ok(());
        }
        // `start_prefix_ok` looks at the first `MAX_METHOD_LEN + 1` bytes: check whenever new
        // bytes reach into them.
        if old <= MAX_METHOD_LEN && !start_prefix_ok(&self.buf) {
            return Err(ParseError::UnexpectedBytes);
        }
        let new = &self.buf[old..];
        let (line, done) = match new.iter().position(|&b| b == b'\n') {
            Some(i) => (&new[..i], true),
            None => (new, false),
        };
        if line.iter().any(|&b| is_ctl(b) && b != b'\r' && b != b'\t') {
            return Err(ParseError::InvalidStartLine);
        }
        self.first_line_done = done;
        Ok(())
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
