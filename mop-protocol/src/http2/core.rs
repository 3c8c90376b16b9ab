//! What both directions of a connection share: the HPACK decoders, the settings, and the
//! streams waiting for their responses. The frame readers report events here.

use std::collections::VecDeque;

use super::connection::Http2Limits;
use super::error::{Http2Stats, ParseError};
use super::fields::{BlockFields, Slot};
use super::frame::DEFAULT_MAX_FRAME;
use super::grpc;
use super::hpack::Decoder;
use super::reader::Ts;
use crate::exchange::{HttpExchange, HttpVersion, RequestStart, Role, TraceHeaders};
use crate::segment::Direction;

/// A header block, as the reader saw it start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockInfo {
    pub(crate) stream: u32,
    /// A `PUSH_PROMISE` block: decoded for the table, otherwise ignored.
    pub(crate) push: bool,
    /// The HEADERS frame had `END_STREAM`.
    pub(crate) end_stream: bool,
    /// The segment that carried the HEADERS frame's first byte.
    pub(crate) start: Ts,
}

const fn index(dir: Direction) -> usize {
    match dir {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// SETTINGS frames whose `SETTINGS_HEADER_TABLE_SIZE` waits for an ACK, per direction.
const MAX_UNACKED_SETTINGS: usize = 16;

/// One open stream.
#[derive(Debug)]
pub(crate) struct Stream {
    id: u32,
    /// The direction of the request (its HEADERS opened the stream).
    req_dir: Direction,
    req_ended: bool,
    /// The final (non-1xx) response header block was seen.
    resp_headers: bool,
    /// `content-length` of the request and of the response, used when DATA was lost.
    content_length: [Option<u64>; 2],
    x: HttpExchange,
}

#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) limits: Http2Limits,
    pub(crate) stats: Http2Stats,
    /// The direction that sends requests, once known.
    pub(crate) client: Option<Direction>,
    /// The client preface was seen (in direction `client`): the connection is seen from its
    /// start.
    pub(crate) preface_seen: bool,
    /// After an h2c upgrade, until the client's preface: the HTTP/1.1 exchange of the upgrade
    /// as it was, given back if the connection turns out not to be HTTP/2.
    upgrade: Option<Box<HttpExchange>>,
    /// The connection is not HTTP/2 after all: everything is ignored.
    pub(crate) dead: bool,
    /// HPACK decoders, by the direction of the blocks they decode.
    hpack: [Decoder; 2],
    /// Kept fields of the block being decoded, by direction.
    fields: [BlockFields; 2],
    /// Open streams, in the order they opened (so by id).
    streams: Vec<Stream>,
    /// Highest stream id a request opened: a HEADERS on a lower unknown id is not a request.
    max_request_id: u32,
    /// Requests started since the caller last drained them.
    pub(crate) starts: Vec<RequestStart>,
    /// By block direction: the `SETTINGS_HEADER_TABLE_SIZE` of each SETTINGS frame its decoder's
    /// side sent and the encoder has not acknowledged yet.
    unacked: [VecDeque<Option<u32>>; 2],
    /// By sending direction: the table size of the SETTINGS frame being read.
    reading_table_size: [Option<u32>; 2],
    /// By frame direction: the receiver's largest announced `SETTINGS_MAX_FRAME_SIZE`.
    max_frame: [u32; 2],
}

impl Core {
    pub(crate) fn new(limits: Http2Limits) -> Self {
        let dec = || Decoder::joined(limits.max_table_size, limits.max_header_block_bytes);
        let fields = || {
            let mut f = BlockFields::default();
            f.keep_grpc_message = limits.keep_grpc_message;
            f
        };
        Self {
            limits,
            stats: Http2Stats::default(),
            client: None,
            preface_seen: false,
            upgrade: None,
            dead: false,
            hpack: [dec(), dec()],
            fields: [fields(), fields()],
            streams: Vec::new(),
            max_request_id: 0,
            starts: Vec::new(),
            unacked: [VecDeque::new(), VecDeque::new()],
            reading_table_size: [None; 2],
            max_frame: [DEFAULT_MAX_FRAME; 2],
        }
    }

    pub(crate) fn open_streams(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        let strings = |x: &HttpExchange| {
            let t = &x.trace_headers;
            [
                &x.host,
                &x.content_type,
                &x.grpc_message,
                &t.traceparent,
                &t.tracestate,
                &t.b3,
            ]
            .iter()
            .chain(
                [
                    &t.x_b3_traceid,
                    &t.x_b3_spanid,
                    &t.x_b3_parentspanid,
                    &t.x_b3_sampled,
                ]
                .iter(),
            )
            .map(|s| s.as_ref().map_or(0, String::capacity))
            .sum::<usize>()
                + x.method.capacity()
                + x.target.capacity()
        };
        self.hpack.iter().map(Decoder::heap_bytes).sum::<usize>()
            + self.streams.capacity() * std::mem::size_of::<Stream>()
            + self.streams.iter().map(|s| strings(&s.x)).sum::<usize>()
    }

    pub(crate) fn max_frame(&self, dir: Direction) -> u32 {
        self.max_frame[index(dir)]
    }

    /// The blocks of `dir` are seen from the connection's start: their table is empty and
    /// exact.
    pub(crate) fn fresh_start(&mut self, dir: Direction) {
        let l = &self.limits;
        self.hpack[index(dir)] = Decoder::new(l.max_table_size, l.max_header_block_bytes);
    }

    /// The client preface went by in `dir`.
    pub(crate) fn client_preface(&mut self, dir: Direction) {
        if self.client.is_none() {
            self.client = Some(dir);
        }
        self.preface_seen = true;
        self.upgrade = None;
        self.fresh_start(dir);
    }

    /// A stream opened by an upgraded HTTP/1.1 request (stream 1).
    pub(crate) fn upgraded(&mut self, mut x: HttpExchange) {
        self.upgrade = Some(Box::new(x.clone()));
        let req_dir = match x.role {
            Role::Server => Direction::Ingress,
            Role::Client => Direction::Egress,
        };
        self.client = Some(req_dir);
        x.version = HttpVersion::Http2;
        x.stream_id = 1;
        x.status = None;
        x.response_start_ns = 0;
        x.response_end_ns = 0;
        x.response_body_size = 0;
        x.response_head_truncated = false;
        x.response_body_size_unknown = false;
        self.max_request_id = 1;
        self.streams.push(Stream {
            id: 1,
            req_dir,
            req_ended: true,
            resp_headers: false,
            content_length: [None; 2],
            x,
        });
    }

    /// The client's preface was not there: after an upgrade, the connection is not HTTP/2 (a
    /// WebSocket, say). The upgrade exchange goes out as HTTP/1.1 saw it, and nothing more.
    pub(crate) fn no_preface(&mut self, out: &mut Vec<HttpExchange>) {
        if let Some(x) = self.upgrade.take() {
            self.streams.clear();
            self.dead = true;
            self.stats.exchanges += 1;
            out.push(*x);
        }
    }

    pub(crate) fn block_start(&mut self, dir: Direction) {
        self.fields[index(dir)].reset();
    }

    pub(crate) fn fragment(&mut self, dir: Direction, bytes: &[u8]) {
        let i = index(dir);
        self.hpack[i].fragment(bytes, &mut self.fields[i]);
    }

    /// Bytes of the current block in `dir` will not be decoded; `count` when they were not
    /// captured (the other causes are counted where they happen).
    pub(crate) fn block_lost(&mut self, dir: Direction, count: bool) {
        let i = index(dir);
        if !self.fields[i].lost {
            self.fields[i].lost = true;
            self.hpack[i].lost();
            if count {
                self.stats.record(ParseError::HeaderBlockLost);
            }
        }
    }

    /// Frame sync was lost in `dir`: header blocks may have been missed, and any frame of the
    /// open streams.
    pub(crate) fn sync_lost(&mut self, dir: Direction) {
        let i = index(dir);
        self.hpack[i].lost();
        self.hpack[i].end_block(&mut self.fields[i]);
        self.fields[i].reset();
        for s in &mut self.streams {
            if s.req_dir == dir {
                if !s.req_ended {
                    s.x.request_body_size_unknown = true;
                }
            } else {
                s.x.response_body_size_unknown = true;
                s.x.response_head_truncated = true;
            }
        }
    }

    /// The header block ended (`END_HEADERS`, or cut short).
    pub(crate) fn block_end(
        &mut self,
        dir: Direction,
        b: BlockInfo,
        end: Ts,
        out: &mut Vec<HttpExchange>,
    ) {
        let i = index(dir);
        if self.hpack[i].block_failed() {
            self.fields[i].lost = true;
        }
        self.hpack[i].end_block(&mut self.fields[i]);
        for (e, n) in self.fields[i].take_errors() {
            for _ in 0..n {
                self.stats.record(e.into());
            }
        }
        self.stats.unknown_fields += u64::from(self.fields[i].unknown);
        if !b.push {
            self.headers(dir, b, end, out);
        }
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().rposition(|s| s.id == id)
    }

    fn headers(&mut self, dir: Direction, b: BlockInfo, end: Ts, out: &mut Vec<HttpExchange>) {
        let i = index(dir);
        let Some(at) = self.find(b.stream) else {
            self.open(dir, b, end, out);
            return;
        };
        let f = &self.fields[i];
        let s = &mut self.streams[at];
        if s.req_dir == dir {
            // Request trailers.
            s.x.request_end_ns = end.exit;
            if b.end_stream {
                s.req_ended = true;
            }
            return;
        }
        let status = f.number(Slot::Status).filter(|c| (100..1000).contains(c));
        if status.is_some_and(|c| c < 200 && c != 101) && !b.end_stream {
            // An interim response: the final one is still to come.
            return;
        }
        if s.resp_headers {
            // Trailers.
            s.x.response_head_truncated |= !f.complete();
        } else {
            s.resp_headers = true;
            s.x.status = status.map(|c| c as u16);
            s.x.response_start_ns = b.start.enter;
            s.x.response_head_truncated |= !f.complete();
            s.content_length[1] = f.number(Slot::ContentLength);
        }
        if s.x.grpc_status.is_none() {
            s.x.grpc_status = f
                .number(Slot::GrpcStatus)
                .and_then(|g| u32::try_from(g).ok());
        }
        if s.x.grpc_message.is_none() {
            s.x.grpc_message = f.string(Slot::GrpcMessage);
        }
        s.x.response_end_ns = end.exit;
        if b.end_stream {
            self.complete(at, out);
        }
    }

    /// A header block on a stream that is not open: a new request, or a response whose request
    /// was not seen.
    fn open(&mut self, dir: Direction, b: BlockInfo, end: Ts, out: &mut Vec<HttpExchange>) {
        let f = &self.fields[index(dir)];
        let request = match self.client {
            Some(c) => c == dir,
            None if f.get(Slot::Method).is_some() => true,
            None if f.get(Slot::Status).is_some() => {
                self.client = Some(dir.reverse());
                false
            }
            None => {
                self.stats.record(ParseError::UnknownRole);
                return;
            }
        };
        if !request {
            if b.stream.is_multiple_of(2) {
                // The response on a pushed stream.
                self.stats.untracked_frames += 1;
            } else {
                self.stats.record(ParseError::ResponseWithoutRequest);
            }
            return;
        }
        if b.stream.is_multiple_of(2) || b.stream <= self.max_request_id {
            // Not a new client stream: trailers of a stream already done, or broken.
            self.stats.untracked_frames += 1;
            return;
        }
        self.client = Some(dir);
        self.max_request_id = b.stream;
        if self.streams.len() >= self.limits.max_streams.max(1) {
            self.stats.record(ParseError::TooManyStreams);
            let old = &mut self.streams[0].x;
            if old.response_start_ns == 0 {
                old.response_end_ns = end.exit;
            }
            self.complete(0, out);
        }
        let f = &self.fields[index(dir)];
        let x = HttpExchange {
            role: match dir {
                Direction::Ingress => Role::Server,
                Direction::Egress => Role::Client,
            },
            version: HttpVersion::Http2,
            method: f.string(Slot::Method).unwrap_or_default(),
            target: f.string(Slot::Path).unwrap_or_default(),
            host: f.string(Slot::Authority),
            status: None,
            request_body_size: 0,
            response_body_size: 0,
            trace_headers: TraceHeaders {
                traceparent: f.string(Slot::Traceparent),
                tracestate: f.string(Slot::Tracestate),
                b3: f.string(Slot::B3),
                x_b3_traceid: f.string(Slot::XB3TraceId),
                x_b3_spanid: f.string(Slot::XB3SpanId),
                x_b3_parentspanid: f.string(Slot::XB3ParentSpanId),
                x_b3_sampled: f.string(Slot::XB3Sampled),
            },
            content_type: f.string(Slot::ContentType),
            request_start_ns: b.start.enter,
            request_first_exit_ns: b.start.exit,
            request_end_ns: end.exit,
            response_start_ns: 0,
            response_end_ns: 0,
            request_tid: b.start.tid,
            // A request without `:method`, or without `:path` (CONNECT aside), or with either
            // empty, is malformed: flagged like one whose fields were lost.
            request_head_truncated: !f.complete()
                || f.get(Slot::Method).is_none_or(<[u8]>::is_empty)
                || (f.get(Slot::Path).is_none_or(<[u8]>::is_empty)
                    && f.get(Slot::Method) != Some(b"CONNECT")),
            request_target_truncated: f.path_cut,
            response_head_truncated: false,
            request_body_size_unknown: false,
            response_body_size_unknown: false,
            stream_id: b.stream,
            seq: u64::from(b.stream),
            grpc_status: None,
            grpc_message: None,
            reset_code: None,
        };
        self.starts.push(RequestStart::of(&x));
        self.streams.push(Stream {
            id: b.stream,
            req_dir: dir,
            req_ended: b.end_stream,
            resp_headers: false,
            content_length: [f.number(Slot::ContentLength), None],
            x,
        });
    }

    pub(crate) fn data(
        &mut self,
        dir: Direction,
        id: u32,
        size: Option<u64>,
        end_stream: bool,
        ts: Ts,
        out: &mut Vec<HttpExchange>,
    ) {
        let Some(at) = self.find(id) else {
            self.stats.untracked_frames += 1;
            return;
        };
        let s = &mut self.streams[at];
        let request = s.req_dir == dir;
        let (body, unknown) = if request {
            s.x.request_end_ns = ts.exit;
            s.req_ended |= end_stream;
            (
                &mut s.x.request_body_size,
                &mut s.x.request_body_size_unknown,
            )
        } else {
            s.x.response_end_ns = ts.exit;
            (
                &mut s.x.response_body_size,
                &mut s.x.response_body_size_unknown,
            )
        };
        match size {
            Some(n) => *body += n,
            None => *unknown = true,
        }
        if !request && end_stream {
            self.complete(at, out);
        }
    }

    pub(crate) fn rst(
        &mut self,
        dir: Direction,
        id: u32,
        code: u32,
        ts: Ts,
        out: &mut Vec<HttpExchange>,
    ) {
        let Some(at) = self.find(id) else {
            self.stats.untracked_frames += 1;
            return;
        };
        self.stats.resets += 1;
        let s = &mut self.streams[at];
        s.x.reset_code = Some(code);
        s.x.response_end_ns = ts.exit;
        let by_server = s.req_dir != dir;
        let is_grpc =
            s.x.content_type
                .as_deref()
                .is_some_and(grpc::is_grpc_content_type);
        if by_server && is_grpc && s.x.grpc_status.is_none() {
            s.x.grpc_status = grpc::status_from_server_reset(code);
        }
        self.complete(at, out);
    }

    /// `dir`'s sender will process no stream of its peer above `last`.
    pub(crate) fn goaway(
        &mut self,
        dir: Direction,
        last: u32,
        ts: Ts,
        out: &mut Vec<HttpExchange>,
    ) {
        let peer = dir.reverse();
        while let Some(at) = self
            .streams
            .iter()
            .position(|s| s.req_dir == peer && s.id > last)
        {
            self.stats.record(ParseError::StreamAbandoned);
            self.streams[at].x.response_end_ns = ts.exit;
            self.complete(at, out);
        }
    }

    pub(crate) fn setting(&mut self, dir: Direction, id: u16, value: u32) {
        const HEADER_TABLE_SIZE: u16 = 0x1;
        const MAX_FRAME_SIZE: u16 = 0x5;
        let peer = index(dir.reverse());
        match id {
            HEADER_TABLE_SIZE => {
                self.hpack[peer].settings_announced(value as usize);
                self.reading_table_size[index(dir)] = Some(value);
            }
            MAX_FRAME_SIZE => {
                let v = value.clamp(DEFAULT_MAX_FRAME, (1 << 24) - 1);
                self.max_frame[peer] = self.max_frame[peer].max(v);
            }
            _ => {}
        }
    }

    /// The end of a SETTINGS frame (not an ACK) sent in `dir`.
    pub(crate) fn settings_end(&mut self, dir: Direction) {
        let size = self.reading_table_size[index(dir)].take();
        let q = &mut self.unacked[index(dir.reverse())];
        if q.len() >= MAX_UNACKED_SETTINGS {
            q.pop_front();
        }
        q.push_back(size);
    }

    /// A SETTINGS ACK sent in `dir`: the encoder of `dir`'s blocks acknowledged its peer's
    /// oldest unacknowledged SETTINGS.
    pub(crate) fn settings_ack(&mut self, dir: Direction) {
        let i = index(dir);
        if let Some(Some(size)) = self.unacked[i].pop_front() {
            self.hpack[i].settings_acked(size as usize);
        }
    }

    /// Emits stream `at`.
    fn complete(&mut self, at: usize, out: &mut Vec<HttpExchange>) {
        let mut s = self.streams.remove(at);
        let x = &mut s.x;
        for (size, unknown, cl) in [
            (
                &mut x.request_body_size,
                &mut x.request_body_size_unknown,
                s.content_length[0],
            ),
            (
                &mut x.response_body_size,
                &mut x.response_body_size_unknown,
                s.content_length[1],
            ),
        ] {
            if *unknown {
                match cl {
                    Some(n) => {
                        *size = n;
                        *unknown = false;
                    }
                    None => *size = 0,
                }
            }
        }
        self.stats.exchanges += 1;
        if x.request_head_truncated || x.response_head_truncated {
            self.stats.degraded_exchanges += 1;
        }
        out.push(s.x);
    }

    /// The connection closed at `ts`: every open stream is emitted, in id order.
    pub(crate) fn close(&mut self, ts: u64, out: &mut Vec<HttpExchange>) {
        while !self.streams.is_empty() {
            self.stats.record(ParseError::IncompleteAtClose);
            self.streams[0].x.response_end_ns = ts;
            self.complete(0, out);
        }
    }
}
