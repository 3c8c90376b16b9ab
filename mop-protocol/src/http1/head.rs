//! Start lines, the few header fields the agent keeps, and how long a body is.
//!
//! Everything here borrows from the header block it is given; nothing is allocated.

use super::error::ParseError;
use crate::exchange::HttpVersion;

/// Methods that [`looks_like_request`] recognises.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"PATCH ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

/// Longest method token accepted while a request line is still arriving.
pub(crate) const MAX_METHOD_LEN: usize = 32;

/// True when `head` starts like an HTTP/1 request: a known method and a space, then a visible
/// character. A shorter `head` that is a prefix of such a start also matches; an empty one
/// does not.
pub fn looks_like_request(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    METHODS.iter().any(|m| {
        if head.len() <= m.len() {
            m.starts_with(head)
        } else {
            head.starts_with(m) && head[m.len()].is_ascii_graphic()
        }
    })
}

/// True when `head` starts like an HTTP/1 response: `HTTP/1.`, a digit, a space and a digit. A
/// shorter `head` that is a prefix of such a start also matches; an empty one does not.
pub fn looks_like_response(head: &[u8]) -> bool {
    const PREFIX: &[u8] = b"HTTP/1.";
    if head.is_empty() {
        return false;
    }
    let n = head.len().min(PREFIX.len());
    if head[..n] != PREFIX[..n] {
        return false;
    }
    let rest = &head[n..];
    let shape: [fn(u8) -> bool; 3] = [
        |b| b == b'0' || b == b'1',
        |b| b == b' ',
        |b| b.is_ascii_digit(),
    ];
    rest.iter().zip(shape).all(|(&b, ok)| ok(b))
}

/// True when `buf` can still grow into a start line: a prefix of `HTTP/`, or a method token
/// followed by a space. Used to give up early on garbage instead of buffering it.
pub(crate) fn start_prefix_ok(buf: &[u8]) -> bool {
    const HTTP: &[u8] = b"HTTP/";
    let n = buf.len().min(HTTP.len());
    if n > 0 && buf[..n] == HTTP[..n] {
        return true;
    }
    let token = buf
        .iter()
        .take(MAX_METHOD_LEN)
        .take_while(|&&b| is_tchar(b))
        .count();
    if token == buf.len() {
        return token > 0;
    }
    token > 0 && buf[token] == b' '
}

/// RFC 9110 `tchar`.
pub(crate) const fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|'
        | b'~' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z')
}

/// A control character (RFC 5234 `CTL`).
pub(crate) const fn is_ctl(b: u8) -> bool {
    b < b' ' || b == 0x7f
}

/// Offset just past the empty line that ends a header block, searching from `from`.
/// Bare LF line ends are accepted (RFC 9112 section 2.2).
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        let nl = i + buf[i..].iter().position(|&b| b == b'\n')?;
        match buf.get(nl + 1..) {
            Some([b'\n', ..]) => return Some(nl + 2),
            Some([b'\r', b'\n', ..]) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// The first line of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartLine<'a> {
    Request {
        method: &'a [u8],
        target: &'a [u8],
        /// The capture window cut the target: `target` is only its prefix.
        cut: bool,
    },
    Response {
        /// `None` when the line was cut before the code.
        status: Option<u16>,
    },
}

/// The header fields the agent keeps, borrowed, plus what framing needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[expect(clippy::struct_excessive_bools, reason = "independent header facts")]
pub(crate) struct Fields<'a> {
    pub(crate) host: Option<&'a [u8]>,
    pub(crate) content_type: Option<&'a [u8]>,
    pub(crate) traceparent: Option<&'a [u8]>,
    pub(crate) tracestate: Option<&'a [u8]>,
    pub(crate) b3: Option<&'a [u8]>,
    pub(crate) x_b3_traceid: Option<&'a [u8]>,
    pub(crate) x_b3_spanid: Option<&'a [u8]>,
    pub(crate) x_b3_parentspanid: Option<&'a [u8]>,
    pub(crate) x_b3_sampled: Option<&'a [u8]>,
    pub(crate) content_length: Option<u64>,
    pub(crate) transfer_encoding: bool,
    /// `chunked` is the final transfer coding.
    pub(crate) chunked: bool,
    pub(crate) connection_close: bool,
    pub(crate) expect_continue: bool,
    /// The first problem met in the header lines; framing cannot be trusted when set.
    pub(crate) error: Option<ParseError>,
}

/// A parsed header block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    pub(crate) start: StartLine<'a>,
    /// `None` when the start line was cut before the version.
    pub(crate) version: Option<HttpVersion>,
    pub(crate) fields: Fields<'a>,
}

/// How the body of a message is delimited (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
    /// The connection stops speaking HTTP/1 after this message (101, CONNECT 2xx).
    Tunnel,
    /// Cannot be known from this head (bad `Content-Length`, bad header lines).
    Unknown,
}

/// Parses a header block. With `complete`, `buf` ends with the empty line; otherwise it is the
/// captured prefix of a block whose rest was not captured, and a final partial line is ignored
/// (or, for the start line, parsed as far as it goes).
pub(crate) fn parse_head(buf: &[u8], complete: bool) -> Result<Head<'_>, ParseError> {
    let (first, mut rest, first_complete) = match buf.iter().position(|&b| b == b'\n') {
        Some(i) => (trim_cr(&buf[..i]), &buf[i + 1..], true),
        None if complete => return Err(ParseError::InvalidStartLine),
        None => (trim_cr(buf), &[][..], false),
    };
    // A cut line that is a prefix of `HTTP/1.` is a response whose status was not captured.
    let response = first.starts_with(b"HTTP/")
        || (!first_complete && b"HTTP/1.".starts_with(first) && !first.is_empty());
    let (start, version) = if response {
        parse_status_line(first, first_complete)?
    } else {
        parse_request_line(first, first_complete)?
    };
    let mut fields = Fields::default();
    let mut last_framing = false;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        let line = trim_cr(&rest[..i]);
        rest = &rest[i + 1..];
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // obs-fold: continues the previous field. Harmless unless it continues framing.
            if last_framing {
                fields.error.get_or_insert(ParseError::InvalidHeader);
            }
            continue;
        }
        last_framing = header_line(line, &mut fields);
    }
    Ok(Head {
        start,
        version,
        fields,
    })
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_version(v: &[u8]) -> Result<HttpVersion, ParseError> {
    match v {
        b"HTTP/1.1" => Ok(HttpVersion::Http11),
        b"HTTP/1.0" => Ok(HttpVersion::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(ParseError::UnsupportedVersion)
        }
        _ => Err(ParseError::InvalidStartLine),
    }
}

type Start<'a> = (StartLine<'a>, Option<HttpVersion>);

fn parse_request_line(line: &[u8], whole: bool) -> Result<Start<'_>, ParseError> {
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return Err(if whole {
            ParseError::InvalidStartLine
        } else {
            ParseError::TruncatedStartLine
        });
    };
    let method = &line[..sp];
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::InvalidStartLine);
    }
    let rest = &line[sp + 1..];
    let (target, version) = match rest.iter().position(|&b| b == b' ') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(ParseError::InvalidStartLine);
    }
    let version = match version {
        Some(v) if whole || v.len() >= 8 => Some(parse_version(v)?),
        None if whole => return Err(ParseError::InvalidStartLine),
        Some(_) | None => None,
    };
    // Without a space after the target, the capture window cut the target itself.
    let cut = !whole && rest.iter().all(|&b| b != b' ');
    if target.is_empty() {
        return Err(if cut {
            ParseError::TruncatedStartLine
        } else {
            ParseError::InvalidStartLine
        });
    }
    Ok((
        StartLine::Request {
            method,
            target,
            cut,
        },
        version,
    ))
}

fn parse_status_line(line: &[u8], whole: bool) -> Result<Start<'_>, ParseError> {
    if !whole && line.len() < 12 {
        // Cut before the status code was complete: a response, status unknown.
        if line.len() >= 8 {
            let version = parse_version(&line[..8])?;
            return Ok((StartLine::Response { status: None }, Some(version)));
        }
        return Ok((StartLine::Response { status: None }, None));
    }
    if line.len() < 12 || line[8] != b' ' {
        return Err(ParseError::InvalidStartLine);
    }
    let version = parse_version(&line[..8])?;
    let code = &line[9..12];
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(ParseError::InvalidStartLine);
    }
    if line.len() > 12 && line[12] != b' ' {
        return Err(ParseError::InvalidStartLine);
    }
    // The reason phrase may hold obs-text, not control characters (RFC 9112 section 4).
    if line[12..].iter().any(|&b| is_ctl(b) && b != b'\t') {
        return Err(ParseError::InvalidStartLine);
    }
    let status = code
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    Ok((
        StartLine::Response {
            status: Some(status),
        },
        Some(version),
    ))
}

/// Records one header line; returns true when it was a framing field (for obs-fold).
fn header_line<'a>(line: &'a [u8], f: &mut Fields<'a>) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        f.error.get_or_insert(ParseError::InvalidHeader);
        return false;
    };
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        f.error.get_or_insert(ParseError::InvalidHeader);
        return false;
    }
    let value = trim_ows(&line[colon + 1..]);
    let slot = match name.len() {
        2 if name.eq_ignore_ascii_case(b"b3") => &mut f.b3,
        4 if name.eq_ignore_ascii_case(b"host") => &mut f.host,
        6 if name.eq_ignore_ascii_case(b"expect") => {
            f.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            return false;
        }
        10 if name.eq_ignore_ascii_case(b"connection") => {
            f.connection_close |= value
                .split(|&b| b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(b"close"));
            return false;
        }
        10 if name.eq_ignore_ascii_case(b"tracestate") => &mut f.tracestate,
        11 if name.eq_ignore_ascii_case(b"traceparent") => &mut f.traceparent,
        11 if name.eq_ignore_ascii_case(b"x-b3-spanid") => &mut f.x_b3_spanid,
        12 if name.eq_ignore_ascii_case(b"content-type") => &mut f.content_type,
        12 if name.eq_ignore_ascii_case(b"x-b3-traceid") => &mut f.x_b3_traceid,
        12 if name.eq_ignore_ascii_case(b"x-b3-sampled") => &mut f.x_b3_sampled,
        14 if name.eq_ignore_ascii_case(b"content-length") => {
            content_length(value, f);
            return true;
        }
        17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
            transfer_encoding(value, f);
            return true;
        }
        17 if name.eq_ignore_ascii_case(b"x-b3-parentspanid") => &mut f.x_b3_parentspanid,
        _ => return false,
    };
    // The first occurrence wins for the kept fields.
    slot.get_or_insert(value);
    false
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// `Content-Length`: digits; a list of identical values (from a proxy) is accepted, as are
/// repeated identical fields (RFC 9110 section 8.6). Anything else marks the head invalid.
fn content_length(value: &[u8], f: &mut Fields<'_>) {
    for item in value.split(|&b| b == b',') {
        let item = trim_ows(item);
        let parsed = if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            None
        } else {
            item.iter().try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
        };
        match (parsed, f.content_length) {
            (Some(n), None) => f.content_length = Some(n),
            (Some(n), Some(prev)) if n == prev => {}
            _ => {
                f.error.get_or_insert(ParseError::InvalidContentLength);
                return;
            }
        }
    }
}

/// `Transfer-Encoding`: only whether `chunked` is the final coding matters.
fn transfer_encoding(value: &[u8], f: &mut Fields<'_>) {
    for item in value.split(|&b| b == b',') {
        let coding = trim_ows(item.split(|&b| b == b';').next().unwrap_or_default());
        if coding.is_empty() {
            continue;
        }
        f.transfer_encoding = true;
        f.chunked = coding.eq_ignore_ascii_case(b"chunked");
    }
}

impl Fields<'_> {
    /// The body framing of a request (RFC 9112 section 6.3) and the problem to count, if any.
    ///
    /// A request with both `Content-Length` and `Transfer-Encoding` is the request smuggling
    /// shape: servers either refuse it or answer it and then must close the connection (RFC 9112
    /// section 6.3), so nothing after its head is a request of its own. Its body runs until the
    /// close, and bytes that one reading or the other would take for a next request never make
    /// a span the server did not serve.
    pub(crate) fn request_framing(&self) -> (Framing, Option<ParseError>) {
        if let Some(e) = self.error {
            return (Framing::Unknown, Some(e));
        }
        if self.transfer_encoding {
            if self.content_length.is_some() {
                return (
                    Framing::UntilClose,
                    Some(ParseError::ContentLengthWithTransferEncoding),
                );
            }
            if self.chunked {
                return (Framing::Chunked, None);
            }
            return (Framing::Unknown, Some(ParseError::InvalidTransferEncoding));
        }
        match self.content_length {
            None | Some(0) => (Framing::Empty, None),
            Some(n) => (Framing::Length(n), None),
        }
    }

    /// The body framing of a response to a request with method `HEAD` (`head_request`) or
    /// `CONNECT` (`connect_request`).
    pub(crate) fn response_framing(
        &self,
        status: u16,
        head_request: bool,
        connect_request: bool,
    ) -> (Framing, Option<ParseError>) {
        if status == 101 || (connect_request && (200..300).contains(&status)) {
            return (Framing::Tunnel, None);
        }
        if head_request || status < 200 || status == 204 || status == 304 {
            return (Framing::Empty, None);
        }
        if let Some(e) = self.error {
            return (Framing::Unknown, Some(e));
        }
        if self.transfer_encoding {
            let smuggle = self
                .content_length
                .map(|_| ParseError::ContentLengthWithTransferEncoding);
            let framing = if self.chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            };
            return (framing, smuggle);
        }
        match self.content_length {
            Some(0) => (Framing::Empty, None),
            Some(n) => (Framing::Length(n), None),
            None => (Framing::UntilClose, None),
        }
    }
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
