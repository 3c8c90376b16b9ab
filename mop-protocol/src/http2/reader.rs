//! One direction's frame reader: finds frames in the captured segments, across any split, and
//! turns them into events for [`Core`].

use super::core::{BlockInfo, Core};
use super::error::ParseError;
use super::frame::{
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, FrameHeader, GOAWAY, HEADER_LEN, HEADERS,
    PADDED, PREFACE, PRIORITY, PRIORITY_FLAG, PUSH_PROMISE, RST_STREAM, SETTINGS, WINDOW_UPDATE,
    frames_tile,
};
use crate::exchange::HttpExchange;
use crate::segment::{Direction, Segment};

/// Times and thread of the segment being parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ts {
    pub(crate) enter: u64,
    pub(crate) exit: u64,
    pub(crate) tid: u32,
}

/// Longest HTTP/1.1 101 response head skipped before the frames of an `Upgrade: h2c`.
const MAX_UPGRADE_HEAD: u32 = 16 * 1024;

#[derive(Clone, Copy, Debug)]
enum State {
    /// Nothing seen yet: the first segment says whether the connection starts here.
    Start,
    /// Inside the client preface; `.0` bytes matched.
    Preface(u8),
    /// Inside the HTTP/1.1 101 response that precedes the server's frames after an upgrade:
    /// `matched` bytes of the final CRLFCRLF, `seen` bytes so far.
    UpgradeHead { matched: u8, seen: u32 },
    /// Inside a frame header.
    Header { buf: [u8; HEADER_LEN], have: u8 },
    /// Inside a frame payload.
    Payload(Payload),
    /// Frame sync lost: waiting for a segment that starts with frames.
    Lost,
}

#[derive(Clone, Copy, Debug)]
struct Payload {
    h: FrameHeader,
    /// Payload bytes consumed.
    pos: u32,
    /// Pad length of a PADDED frame, once read; `None` also when its byte was not captured.
    pad: Option<u8>,
    /// The first bytes of a control frame (`RST_STREAM`, GOAWAY) or the current SETTINGS entry.
    small: [u8; 8],
    /// `small` holds captured bytes only.
    small_ok: bool,
    /// The frame breaks RFC 9113: its payload is skipped.
    invalid: bool,
    /// Its padding is longer than its payload (counted once).
    bad_pad: bool,
}

/// The frame reader of one direction.
#[derive(Debug)]
pub(crate) struct Reader {
    dir: Direction,
    state: State,
    /// The segment that carried the current frame's first byte.
    frame_start: Ts,
    /// The header block in progress (HEADERS or `PUSH_PROMISE`, then CONTINUATION).
    block: Option<BlockInfo>,
    /// Frames were just found again: CONTINUATIONs of a block that started in lost bytes are
    /// expected and skipped quietly.
    resynced: bool,
}

impl Reader {
    pub(crate) fn new(dir: Direction) -> Self {
        Self {
            dir,
            state: State::Start,
            frame_start: Ts::default(),
            block: None,
            resynced: false,
        }
    }

    /// A reader expecting the client preface (the client side after an h2c upgrade).
    pub(crate) fn expect_preface(dir: Direction) -> Self {
        Self {
            state: State::Preface(0),
            ..Self::new(dir)
        }
    }

    /// A reader expecting the HTTP/1.1 101 response, then frames (the server side after an h2c
    /// upgrade).
    pub(crate) fn expect_upgrade_head(dir: Direction) -> Self {
        Self {
            state: State::UpgradeHead {
                matched: 0,
                seen: 0,
            },
            ..Self::new(dir)
        }
    }

    /// True while the reader has frame sync (or is in the preface or upgrade head).
    pub(crate) fn in_sync(&self) -> bool {
        !matches!(self.state, State::Start | State::Lost)
    }

    pub(crate) fn feed(&mut self, seg: &Segment<'_>, core: &mut Core, out: &mut Vec<HttpExchange>) {
        if seg.total_len() == 0 {
            // Nothing moved: it must not decide how the direction starts.
            return;
        }
        let ts = Ts {
            enter: seg.enter_ns,
            exit: seg.exit_ns,
            tid: seg.tid,
        };
        match self.state {
            State::Start => self.start(seg, core),
            State::Lost => {
                if frames_tile(seg, core.max_frame(self.dir)) {
                    self.state = header();
                    self.resynced = true;
                } else {
                    core.stats.skipped_segments += 1;
                }
            }
            _ => {}
        }
        if !self.in_sync() {
            return;
        }
        self.bytes(seg.head, ts, core, out);
        if seg.gap > 0 {
            self.gap(seg.gap, ts, core, out);
        }
        self.bytes(seg.tail, ts, core, out);
    }

    /// The first segment of the direction.
    fn start(&mut self, seg: &Segment<'_>, core: &mut Core) {
        let n = seg.head.len().min(PREFACE.len());
        if n > 0 && seg.head[..n] == PREFACE[..n] {
            self.state = State::Preface(0);
            return;
        }
        if core.preface_seen && core.client == Some(self.dir.reverse()) {
            // The client's preface was seen: these are the server's first bytes.
            core.fresh_start(self.dir);
            self.state = header();
            return;
        }
        if frames_tile(seg, core.max_frame(self.dir)) {
            // A server preface is a SETTINGS frame that is not an ACK.
            if seg.head.len() >= HEADER_LEN && seg.head[3] == SETTINGS && seg.head[4] & ACK == 0 {
                core.fresh_start(self.dir);
            } else {
                core.stats.joined_late += 1;
            }
            self.state = header();
            self.resynced = true;
        } else {
            core.stats.joined_late += 1;
            core.stats.skipped_segments += 1;
            self.state = State::Lost;
        }
    }

    fn bytes(&mut self, mut data: &[u8], ts: Ts, core: &mut Core, out: &mut Vec<HttpExchange>) {
        while !data.is_empty() {
            match &mut self.state {
                State::Start | State::Lost => return,
                State::Preface(have) => {
                    let at = usize::from(*have);
                    let n = (PREFACE.len() - at).min(data.len());
                    if data[..n] != PREFACE[at..at + n] {
                        core.stats.record(ParseError::InvalidPreface);
                        core.no_preface(out);
                        self.lose(ts, core, out, false);
                        return;
                    }
                    *have += n as u8;
                    data = &data[n..];
                    if usize::from(*have) == PREFACE.len() {
                        core.client_preface(self.dir);
                        self.state = header();
                    }
                }
                State::UpgradeHead { matched, seen } => {
                    let mut used = 0;
                    for &b in data {
                        if *seen < 7 && b != b"HTTP/1."[*seen as usize] {
                            // The head began in bytes fed before: where the frames start is
                            // unknown.
                            self.lose(ts, core, out, true);
                            return;
                        }
                        used += 1;
                        *seen += 1;
                        *matched = match (*matched, b) {
                            (0 | 2, b'\r') | (1 | 3, b'\n') => *matched + 1,
                            (_, b'\r') => 1,
                            _ => 0,
                        };
                        if *matched == 4 {
                            break;
                        }
                    }
                    data = &data[used..];
                    if *matched == 4 {
                        self.state = header();
                    } else if *seen > MAX_UPGRADE_HEAD {
                        self.lose(ts, core, out, true);
                        return;
                    }
                }
                State::Header { buf, have } => {
                    if *have == 0 {
                        self.frame_start = ts;
                    }
                    let at = usize::from(*have);
                    let n = (HEADER_LEN - at).min(data.len());
                    buf[at..at + n].copy_from_slice(&data[..n]);
                    *have += n as u8;
                    data = &data[n..];
                    if usize::from(*have) == HEADER_LEN {
                        let h = FrameHeader::parse(buf);
                        self.on_header(h, ts, core, out);
                    }
                }
                State::Payload(p) => {
                    let n = ((p.h.len - p.pos) as usize).min(data.len());
                    let mut p = *p;
                    self.payload_bytes(&mut p, &data[..n], core);
                    p.pos += n as u32;
                    data = &data[n..];
                    self.state = State::Payload(p);
                    if p.pos == p.h.len {
                        self.frame_end(p, ts, core, out);
                    }
                }
            }
        }
    }

    fn gap(&mut self, mut n: u64, ts: Ts, core: &mut Core, out: &mut Vec<HttpExchange>) {
        if let State::Payload(mut p) = self.state {
            let take = u64::from(p.h.len - p.pos).min(n);
            self.payload_gap(&mut p, take as u32, core);
            p.pos += take as u32;
            n -= take;
            self.state = State::Payload(p);
            if p.pos == p.h.len {
                self.frame_end(p, ts, core, out);
            }
        }
        if n > 0 {
            match self.state {
                State::Start | State::Lost => {}
                State::Preface(_) => {
                    core.stats.record(ParseError::InvalidPreface);
                    core.no_preface(out);
                    self.lose(ts, core, out, false);
                }
                _ => self.lose(ts, core, out, true),
            }
        }
    }

    /// Frame sync is lost: the open header block ends incomplete, the direction's HPACK table is
    /// forgotten, and open streams learn that frames may have been missed.
    fn lose(&mut self, ts: Ts, core: &mut Core, out: &mut Vec<HttpExchange>, count: bool) {
        if count {
            core.stats.record(ParseError::LostSync);
        }
        if let Some(b) = self.block.take() {
            core.block_lost(self.dir, false);
            core.block_end(self.dir, b, ts, out);
        }
        core.sync_lost(self.dir);
        self.state = State::Lost;
    }

    fn on_header(&mut self, h: FrameHeader, ts: Ts, core: &mut Core, out: &mut Vec<HttpExchange>) {
        let dir = self.dir;
        if h.len > core.max_frame(dir) {
            core.stats.record(ParseError::FrameTooLarge);
        }
        if let Some(b) = self.block
            && (h.kind != CONTINUATION || h.stream != b.stream)
        {
            core.stats.record(ParseError::UnexpectedContinuation);
            core.block_lost(dir, false);
            self.block = None;
            core.block_end(dir, b, ts, out);
        }
        let mut invalid = !valid(&h);
        if h.kind != CONTINUATION {
            self.resynced = false;
        }
        match h.kind {
            _ if invalid => core.stats.record(ParseError::InvalidFrame),
            HEADERS | PUSH_PROMISE => {
                if h.kind == PUSH_PROMISE {
                    core.stats.push_promises += 1;
                }
                self.block = Some(BlockInfo {
                    stream: h.stream,
                    push: h.kind == PUSH_PROMISE,
                    end_stream: h.kind == HEADERS && h.has(END_STREAM),
                    start: self.frame_start,
                });
                core.block_start(dir);
            }
            CONTINUATION if self.block.is_none() => {
                if !self.resynced {
                    core.stats.record(ParseError::UnexpectedContinuation);
                }
                invalid = true;
            }
            _ => {}
        }
        let p = Payload {
            h,
            pos: 0,
            pad: None,
            small: [0; 8],
            small_ok: true,
            invalid,
            bad_pad: false,
        };
        self.state = State::Payload(p);
        if h.len == 0 {
            self.frame_end(p, ts, core, out);
        }
    }

    /// Where the header block fragment lies in a HEADERS, `PUSH_PROMISE` or CONTINUATION payload:
    /// `(start, end)`, `end` known once the pad length is.
    fn fragment_range(p: &Payload) -> (u32, Option<u32>) {
        let padded = p.h.has(PADDED) && p.h.kind != CONTINUATION;
        let mut start = u32::from(padded);
        if p.h.kind == HEADERS && p.h.has(PRIORITY_FLAG) {
            start += 5;
        }
        if p.h.kind == PUSH_PROMISE {
            start += 4;
        }
        let pad = if padded {
            p.pad.map(u32::from)
        } else {
            Some(0)
        };
        (start, pad.and_then(|pad| p.h.len.checked_sub(pad)))
    }

    fn payload_bytes(&mut self, p: &mut Payload, chunk: &[u8], core: &mut Core) {
        if p.invalid || chunk.is_empty() {
            return;
        }
        let dir = self.dir;
        if p.pos == 0 && p.h.has(PADDED) && matches!(p.h.kind, DATA | HEADERS | PUSH_PROMISE) {
            p.pad = Some(chunk[0]);
        }
        match p.h.kind {
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                let (start, end) = Self::fragment_range(p);
                let Some(end) = end.filter(|&e| e >= start) else {
                    // Padding longer than the payload: the block is unusable.
                    if p.pad.is_some() && !p.bad_pad {
                        p.bad_pad = true;
                        core.stats.record(ParseError::InvalidFrame);
                    }
                    core.block_lost(dir, false);
                    return;
                };
                let lo = p.pos.max(start);
                let hi = (p.pos + chunk.len() as u32).min(end);
                if lo < hi {
                    core.fragment(dir, &chunk[(lo - p.pos) as usize..(hi - p.pos) as usize]);
                }
            }
            SETTINGS if !p.h.has(ACK) => {
                for (i, &b) in chunk.iter().enumerate() {
                    let k = ((p.pos as usize) + i) % 6;
                    if k == 0 {
                        p.small_ok = true;
                    }
                    p.small[k] = b;
                    if k == 5 && p.small_ok {
                        let id = u16::from_be_bytes([p.small[0], p.small[1]]);
                        let v =
                            u32::from_be_bytes([p.small[2], p.small[3], p.small[4], p.small[5]]);
                        core.setting(dir, id, v);
                    }
                }
            }
            RST_STREAM | GOAWAY => {
                for (i, &b) in chunk.iter().enumerate() {
                    if let Some(slot) = p.small.get_mut(p.pos as usize + i) {
                        *slot = b;
                    }
                }
            }
            _ => {}
        }
    }

    fn payload_gap(&mut self, p: &mut Payload, n: u32, core: &mut Core) {
        if p.invalid || n == 0 {
            return;
        }
        if p.h.kind == SETTINGS || p.pos < 8 {
            // The current SETTINGS entry, or the fixed head of RST_STREAM / GOAWAY.
            p.small_ok = false;
        }
        if matches!(p.h.kind, HEADERS | PUSH_PROMISE | CONTINUATION) {
            let (start, end) = Self::fragment_range(p);
            // Lost fragment bytes, or a lost pad length (the fragment's end is then unknown).
            if end.is_none_or(|e| p.pos < e && p.pos + n > start) {
                core.block_lost(self.dir, true);
            }
        }
    }

    fn frame_end(&mut self, p: Payload, ts: Ts, core: &mut Core, out: &mut Vec<HttpExchange>) {
        self.state = header();
        if p.invalid {
            return;
        }
        let dir = self.dir;
        let h = p.h;
        match h.kind {
            DATA => {
                let pad = if h.has(PADDED) {
                    p.pad.map(|pad| u32::from(pad) + 1)
                } else {
                    Some(0)
                };
                let size = pad.and_then(|pad| h.len.checked_sub(pad));
                if pad.is_some() && size.is_none() {
                    core.stats.record(ParseError::InvalidFrame);
                }
                core.data(
                    dir,
                    h.stream,
                    size.map(u64::from),
                    h.has(END_STREAM),
                    ts,
                    out,
                );
            }
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                if h.has(END_HEADERS)
                    && let Some(b) = self.block.take()
                {
                    core.block_end(dir, b, ts, out);
                }
            }
            SETTINGS if h.has(ACK) => core.settings_ack(dir),
            SETTINGS => core.settings_end(dir),
            RST_STREAM if p.small_ok => {
                let error = u32::from_be_bytes([p.small[0], p.small[1], p.small[2], p.small[3]]);
                core.rst(dir, h.stream, error, ts, out);
            }
            GOAWAY if p.small_ok => {
                let last = u32::from_be_bytes([p.small[0], p.small[1], p.small[2], p.small[3]])
                    & 0x7fff_ffff;
                core.goaway(dir, last, ts, out);
            }
            _ => {}
        }
    }
}

const fn header() -> State {
    State::Header {
        buf: [0; HEADER_LEN],
        have: 0,
    }
}

/// The checks RFC 9113 makes on a frame before its payload: the stream it may be on and its
/// fixed lengths. A frame failing them is counted and skipped.
fn valid(h: &FrameHeader) -> bool {
    let on_stream = h.stream != 0;
    match h.kind {
        DATA | HEADERS | CONTINUATION | PUSH_PROMISE => on_stream,
        PRIORITY => on_stream && h.len == 5,
        RST_STREAM => on_stream && h.len == 4,
        SETTINGS => {
            !on_stream
                && if h.has(ACK) {
                    h.len == 0
                } else {
                    h.len.is_multiple_of(6)
                }
        }
        super::frame::PING => !on_stream && h.len == 8,
        GOAWAY => !on_stream && h.len >= 8,
        WINDOW_UPDATE => h.len == 4,
        _ => true,
    }
}
