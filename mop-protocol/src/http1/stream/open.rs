//! Opening a message: a parsed head becomes a queued request, or is attached to the request
//! it answers; its framing decides how the body is read.

use super::{Ctx, Events, Msg, Phase, Stream, lossy};
use crate::exchange::{HttpExchange, HttpVersion, Role, TraceHeaders};
use crate::http1::chunked::ChunkPhase;
use crate::http1::connection::Shared;
use crate::http1::error::ParseError;
use crate::http1::head::{Framing, Head, StartLine, parse_head};
use crate::segment::Direction;

impl Stream {
    /// Parses a header block and opens its message: queues a request, or attaches a response
    /// to the request it answers. Returns the body framing, or `None` when the start line is
    /// unusable (the stream then resynchronises).
    pub(super) fn open(
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

    pub(super) fn request_exchange(
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
            seq: 0,
            grpc_status: None,
            grpc_message: None,
            reset_code: None,
        }
    }

    /// Starts the body of a message whose head was just parsed.
    pub(super) fn enter_body(
        &mut self,
        cx: &Ctx,
        framing: Framing,
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
        ev: &mut Events,
    ) {
        match framing {
            Framing::Empty => self.finish(sh, out),
            Framing::Length(n) => {
                // The declared length is the body size, whenever the body's bytes come (a
                // server may answer before reading the body, and discard it afterwards).
                if let Some(x) = self.exchange(sh) {
                    *self.body_size(x) = n;
                }
                self.phase = Phase::Body { remaining: n };
            }
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
}
