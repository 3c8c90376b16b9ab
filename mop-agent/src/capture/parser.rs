//! Choosing a connection's parser from its first bytes, and driving it (HTTP/1, HTTP/2, and
//! the switch from one to the other on an `Upgrade: h2c`).

use mop_protocol::{
    Direction, HttpExchange, Segment,
    http1::{self, Http1Connection, Http1Limits},
    http2::{self, Http2Connection, Http2Limits},
};

/// Data records of a connection inspected before it is declared a protocol mop does not parse.
///
/// Generous, because a connection joined mid-stream (the agent started after it opened) may
/// carry body bytes for a while before the next message head.
pub(crate) const SNIFF_SEGMENTS: u8 = 32;

/// Bounds of the parsers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParserLimits {
    /// HTTP/1 limits.
    pub http1: Http1Limits,
    /// HTTP/2 limits.
    pub http2: Http2Limits,
}

/// The parser of one connection.
pub(crate) enum Parser {
    Http1(Box<Http1Connection>),
    Http2(Box<Http2Connection>),
}

/// What a connection speaks, as far as the tracker knows.
pub(crate) enum Protocol {
    /// No payload seen yet that tells; counts the segments inspected.
    Undecided(u8),
    /// A protocol mop parses.
    Parsed(Parser),
    /// Something mop does not parse (or a tunnel); its bytes are ignored.
    Opaque,
}

/// Parse errors drained from a parser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseErrors {
    /// HTTP/1 errors.
    pub http1: u64,
    /// HTTP/2 (frames, HPACK, streams) errors.
    pub http2: u64,
}

impl ParseErrors {
    /// Adds another count.
    pub fn add(&mut self, other: Self) {
        self.http1 += other.http1;
        self.http2 += other.http2;
    }
}

impl Parser {
    /// Feeds one segment; returns the protocol the connection continues with when it changes
    /// (an HTTP/1 connection upgraded to HTTP/2, or a tunnel that is no longer parsed).
    pub(crate) fn feed(
        &mut self,
        dir: Direction,
        seg: &Segment<'_>,
        limits: &ParserLimits,
        out: &mut Vec<HttpExchange>,
    ) -> Option<Protocol> {
        match self {
            Self::Http1(p) => {
                let before = out.len();
                p.feed(dir, seg, out);
                if !p.is_tunnel() {
                    return None;
                }
                // A 101 switches protocols: HTTP/2 when the client goes on with the preface
                // (the HTTP/2 parser checks and gives the 101 back otherwise).
                let upgrade = out[before..]
                    .iter()
                    .position(|x| x.status == Some(101))
                    .map(|i| out.remove(before + i));
                Some(match upgrade {
                    Some(request) => {
                        let mut h2 = Http2Connection::from_h2c_upgrade(limits.http2, request);
                        h2.feed(dir, seg, out);
                        Protocol::Parsed(Self::Http2(Box::new(h2)))
                    }
                    None => Protocol::Opaque,
                })
            }
            Self::Http2(p) => {
                p.feed(dir, seg, out);
                None
            }
        }
    }

    /// A gap of `n` bytes the kernel never reported.
    pub(crate) fn lost(
        &mut self,
        dir: Direction,
        template: &Segment<'_>,
        n: u64,
        out: &mut Vec<HttpExchange>,
    ) {
        let lost = Segment {
            head: &[],
            gap: n,
            tail: &[],
            ..*template
        };
        match self {
            Self::Http1(p) => p.feed(dir, &lost, out),
            Self::Http2(p) => p.feed(dir, &lost, out),
        }
    }

    /// Moves the start markers of requests begun since the last call into `out`.
    pub(crate) fn drain_starts(&mut self, out: &mut Vec<mop_protocol::RequestStart>) {
        match self {
            Self::Http1(p) => p.drain_starts(out),
            Self::Http2(p) => p.drain_starts(out),
        }
    }

    /// The connection closed (or went idle for good).
    pub(crate) fn on_close(&mut self, ts_ns: u64, out: &mut Vec<HttpExchange>) {
        match self {
            Self::Http1(p) => p.on_close(ts_ns, out),
            Self::Http2(p) => p.on_close(ts_ns, out),
        }
    }

    /// Parse errors since the last call.
    pub(crate) fn take_errors(&mut self) -> ParseErrors {
        match self {
            Self::Http1(p) => {
                let stats = p.take_stats();
                for (kind, n) in stats.errors().filter(|(_, n)| *n > 0) {
                    tracing::debug!(error = %kind, count = n, "HTTP/1 parse problem.");
                }
                ParseErrors {
                    http1: stats.errors_total(),
                    http2: 0,
                }
            }
            Self::Http2(p) => {
                let stats = p.take_stats();
                for (kind, n) in stats.errors().filter(|(_, n)| *n > 0) {
                    tracing::debug!(error = %kind, count = n, "HTTP/2 parse problem.");
                }
                ParseErrors {
                    http1: 0,
                    http2: stats.errors_total(),
                }
            }
        }
    }
}

/// Decides a connection's protocol from a data segment (`seen`: segments inspected so far).
pub(crate) fn sniff(seg: &Segment<'_>, seen: u8, limits: &ParserLimits) -> Protocol {
    let head = seg.head;
    if head.is_empty() {
        return Protocol::Undecided(seen);
    }
    if http2::looks_like_preface(head) {
        return Protocol::Parsed(Parser::Http2(Box::new(Http2Connection::new(limits.http2))));
    }
    if http1::looks_like_request(head) || http1::looks_like_response(head) {
        return Protocol::Parsed(Parser::Http1(Box::new(Http1Connection::new(limits.http1))));
    }
    if is_tls_record(head) {
        // Encrypted bytes never make spans; TLS is read at the library (uprobes) instead.
        return Protocol::Opaque;
    }
    if http2::looks_like_frames(seg) {
        // HTTP/2 joined after its preface: its header tables are unknown, so the parser
        // reports what it can prove and leaves the rest out.
        return Protocol::Parsed(Parser::Http2(Box::new(Http2Connection::new(limits.http2))));
    }
    if seen + 1 >= SNIFF_SEGMENTS {
        Protocol::Opaque
    } else {
        Protocol::Undecided(seen + 1)
    }
}

/// True for the start of a TLS record: content type 20..=23, then version 3.x.
fn is_tls_record(head: &[u8]) -> bool {
    matches!(head, [20..=23, 3, 0..=4, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(head: &[u8]) -> Segment<'_> {
        Segment {
            head,
            gap: 0,
            tail: &[],
            enter_ns: 0,
            exit_ns: 0,
            tid: 0,
        }
    }

    #[test]
    fn sniffs_http_tls_and_gives_up_on_noise() {
        let l = ParserLimits::default();
        let is_http1 = |p: &Protocol| matches!(p, Protocol::Parsed(Parser::Http1(_)));
        let is_http2 = |p: &Protocol| matches!(p, Protocol::Parsed(Parser::Http2(_)));
        assert!(is_http1(&sniff(&seg(b"GET / HTTP/1.1\r\n"), 0, &l)));
        assert!(is_http1(&sniff(&seg(b"HTTP/1.1 200 OK\r\n"), 0, &l)));
        assert!(is_http2(&sniff(
            &seg(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            0,
            &l
        )));
        // A SETTINGS ACK frame alone: HTTP/2 joined late.
        assert!(is_http2(&sniff(&seg(&[0, 0, 0, 4, 1, 0, 0, 0, 0]), 0, &l)));
        assert!(matches!(
            sniff(&seg(&[22, 3, 1, 0, 5]), 0, &l),
            Protocol::Opaque
        ));
        assert!(matches!(sniff(&seg(b""), 5, &l), Protocol::Undecided(5)));
        assert!(matches!(
            sniff(&seg(b"\x00\x01"), 0, &l),
            Protocol::Undecided(1)
        ));
        assert!(matches!(
            sniff(&seg(b"\x00\x01"), SNIFF_SEGMENTS - 1, &l),
            Protocol::Opaque
        ));
    }
}
