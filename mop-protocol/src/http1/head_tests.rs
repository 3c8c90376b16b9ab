use super::*;

fn request(buf: &[u8]) -> (Head<'_>, Framing, Option<ParseError>) {
    let h = parse_head(buf, true).unwrap();
    let (f, e) = h.fields.request_framing();
    (h, f, e)
}

#[test]
fn detection_of_requests() {
    for yes in [
        &b"G"[..],
        b"GE",
        b"GET",
        b"GET ",
        b"GET /",
        b"POST /x HTTP/1.1\r\n",
        b"OPTIONS *",
        b"CONNECT a:443",
        b"PATCH",
        b"DEL",
    ] {
        assert!(looks_like_request(yes), "{yes:?}");
    }
    for no in [
        &b""[..],
        b"get /",
        b"GET  /",
        b"GET\t/",
        b"GETX",
        b"PRI * HTTP/2.0",
        b"HTTP/1.1 200",
        b"\x16\x03\x01",
        b"X",
    ] {
        assert!(!looks_like_request(no), "{no:?}");
    }
}

#[test]
fn detection_of_responses() {
    for yes in [
        &b"H"[..],
        b"HTTP",
        b"HTTP/1.",
        b"HTTP/1.1",
        b"HTTP/1.0 ",
        b"HTTP/1.1 2",
        b"HTTP/1.1 200 OK\r\n",
    ] {
        assert!(looks_like_response(yes), "{yes:?}");
    }
    for no in [
        &b""[..],
        b"HTTP/2",
        b"HTTP/1.2",
        b"HTTP/1.1x",
        b"HTTP/1.1 x",
        b"http/1.1",
        b"GET / HTTP/1.1",
    ] {
        assert!(!looks_like_response(no), "{no:?}");
    }
}

#[test]
fn start_prefixes() {
    for yes in [
        &b"H"[..],
        b"HTT",
        b"HTTP/",
        b"PROPFIND ",
        b"M-SEARCH * HTTP/1.1",
        b"G",
    ] {
        assert!(start_prefix_ok(yes), "{yes:?}");
    }
    for no in [&b" GET"[..], b"\x00", b"GET/", b"{\"a\":1}", b"\xff\xfe"] {
        assert!(!start_prefix_ok(no), "{no:?}");
    }
    assert!(!start_prefix_ok(&[b'A'; 40]));
}

#[test]
fn head_end() {
    assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nxx", 0), Some(18));
    assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nxx", 0), Some(16));
    assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r", 0), None);
    assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    assert_eq!(find_head_end(b"a\r\n\r\n", 2), Some(5));
}

#[test]
fn request_with_kept_fields() {
    let buf = b"POST /api/v1?q=1 HTTP/1.1\r\nHOST: example.com:8080\r\nContent-Length:  12 \r\n\
        content-type: application/json\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
        tracestate: a=b\r\nB3: 1-2-1\r\nX-B3-TraceId: t\r\nx-b3-spanid: s\r\nX-B3-ParentSpanId: p\r\nX-B3-Sampled: 1\r\n\
        X-Other: ignored\r\nExpect: 100-Continue\r\nConnection: keep-alive, Close\r\n\r\n";
    let (h, framing, err) = request(buf);
    assert_eq!(
        h.start,
        StartLine::Request {
            method: b"POST",
            target: b"/api/v1?q=1",
            cut: false
        }
    );
    assert_eq!(h.version, Some(HttpVersion::Http11));
    let f = h.fields;
    assert_eq!(f.host, Some(&b"example.com:8080"[..]));
    assert_eq!(f.content_type, Some(&b"application/json"[..]));
    assert_eq!(
        f.traceparent,
        Some(&b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"[..])
    );
    assert_eq!(f.tracestate, Some(&b"a=b"[..]));
    assert_eq!(f.b3, Some(&b"1-2-1"[..]));
    assert_eq!(
        (f.x_b3_traceid, f.x_b3_spanid),
        (Some(&b"t"[..]), Some(&b"s"[..]))
    );
    assert_eq!(
        (f.x_b3_parentspanid, f.x_b3_sampled),
        (Some(&b"p"[..]), Some(&b"1"[..]))
    );
    assert!(f.expect_continue && f.connection_close);
    assert_eq!((framing, err), (Framing::Length(12), None));
}

#[test]
fn framing_rules() {
    let (_, f, e) = request(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!((f, e), (Framing::Empty, None));
    let (_, f, e) = request(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!((f, e), (Framing::Chunked, None));
    let (_, f, e) =
        request(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(
        (f, e),
        (
            Framing::UntilClose,
            Some(ParseError::ContentLengthWithTransferEncoding)
        )
    );
    let (_, f, e) = request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
    assert_eq!(
        (f, e),
        (Framing::Unknown, Some(ParseError::InvalidTransferEncoding))
    );
    let (_, f, e) =
        request(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n");
    assert_eq!((f, e), (Framing::Length(5), None));
    for bad in [
        &b"5, 6"[..],
        b"-1",
        b"+5",
        b"0x10",
        b"",
        b"18446744073709551616",
        b"1 2",
    ] {
        let mut buf = b"POST / HTTP/1.1\r\nContent-Length: ".to_vec();
        buf.extend_from_slice(bad);
        buf.extend_from_slice(b"\r\n\r\n");
        let (_, f, e) = request(&buf);
        assert_eq!(
            (f, e),
            (Framing::Unknown, Some(ParseError::InvalidContentLength)),
            "{bad:?}"
        );
    }
    let (_, f, _) = request(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n");
    assert_eq!(f, Framing::Length(u64::MAX));
    let (_, f, e) = request(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n  6\r\n\r\n");
    assert_eq!((f, e), (Framing::Unknown, Some(ParseError::InvalidHeader)));
    let (h, f, e) = request(b"GET / HTTP/1.1\r\nUser-Agent: a\r\n  folded\r\n\r\n");
    assert_eq!((f, e, h.fields.error), (Framing::Empty, None, None));
}

#[test]
fn response_framing_rules() {
    let fields = |buf| parse_head(buf, true).unwrap().fields;
    let cl = fields(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
    assert_eq!(
        cl.response_framing(200, false, false),
        (Framing::Length(10), None)
    );
    assert_eq!(
        cl.response_framing(200, true, false),
        (Framing::Empty, None)
    );
    assert_eq!(
        cl.response_framing(204, false, false),
        (Framing::Empty, None)
    );
    assert_eq!(
        cl.response_framing(304, false, false),
        (Framing::Empty, None)
    );
    assert_eq!(
        cl.response_framing(100, false, false),
        (Framing::Empty, None)
    );
    assert_eq!(
        cl.response_framing(101, false, false),
        (Framing::Tunnel, None)
    );
    assert_eq!(
        cl.response_framing(200, false, true),
        (Framing::Tunnel, None)
    );
    assert_eq!(
        cl.response_framing(407, false, true),
        (Framing::Length(10), None)
    );
    let none = fields(b"HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!(
        none.response_framing(200, false, false),
        (Framing::UntilClose, None)
    );
    let te = fields(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(
        te.response_framing(200, false, false),
        (
            Framing::UntilClose,
            Some(ParseError::ContentLengthWithTransferEncoding)
        )
    );
}

#[test]
fn bad_start_lines() {
    let cases: [(&[u8], ParseError); 12] = [
        (b"GET\r\n\r\n", ParseError::InvalidStartLine),
        (b"GET /\r\n\r\n", ParseError::InvalidStartLine),
        (b"GET / HTTP/1.1 x\r\n\r\n", ParseError::InvalidStartLine),
        (b"GET  / HTTP/1.1\r\n\r\n", ParseError::InvalidStartLine),
        (b"G(T / HTTP/1.1\r\n\r\n", ParseError::InvalidStartLine),
        (b"GET / HTTP/2.0\r\n\r\n", ParseError::UnsupportedVersion),
        (b"GET / HTTP/1.1x\r\n\r\n", ParseError::InvalidStartLine),
        (b"HTTP/1.1 20 OK\r\n\r\n", ParseError::InvalidStartLine),
        (b"HTTP/1.1 099 OK\r\n\r\n", ParseError::InvalidStartLine),
        (b"HTTP/1.1 2000\r\n\r\n", ParseError::InvalidStartLine),
        (b"HTTP/3.0 200 OK\r\n\r\n", ParseError::UnsupportedVersion),
        (b"\r\n\r\n", ParseError::InvalidStartLine),
    ];
    for (buf, err) in cases {
        assert_eq!(
            parse_head(buf, true),
            Err(err),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
    let h = parse_head(b"HTTP/1.1 200\r\n\r\n", true).unwrap();
    assert_eq!(h.start, StartLine::Response { status: Some(200) });
    let h = parse_head(b"HTTP/1.0 404 Not \xffFound\r\nX: y\r\n\r\n", true).unwrap();
    assert_eq!(
        (h.start, h.version),
        (
            StartLine::Response { status: Some(404) },
            Some(HttpVersion::Http10)
        )
    );
}

#[test]
fn bad_header_lines_are_reported_not_fatal() {
    for line in [
        &b"NoColon"[..],
        b"Bad Name: x",
        b": empty",
        b"Host : x",
        b"\x01x: y",
    ] {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        buf.extend_from_slice(line);
        buf.extend_from_slice(b"\r\nHost: h\r\n\r\n");
        let h = parse_head(&buf, true).unwrap();
        assert_eq!(h.fields.error, Some(ParseError::InvalidHeader), "{line:?}");
        assert_eq!(h.fields.host, Some(&b"h"[..]));
    }
}

#[test]
fn truncated_heads() {
    let h = parse_head(
        b"GET /index.html HTTP/1.1\r\nHost: a.b\r\nUser-Agent: cu",
        false,
    )
    .unwrap();
    assert_eq!(
        h.start,
        StartLine::Request {
            method: b"GET",
            target: b"/index.html",
            cut: false
        }
    );
    assert_eq!(h.fields.host, Some(&b"a.b"[..]));
    // A partial last line is not taken: its value may be cut.
    let h = parse_head(b"GET / HTTP/1.1\r\nHost: exam", false).unwrap();
    assert_eq!(h.fields.host, None);
    let h = parse_head(b"GET /very/long/pa", false).unwrap();
    assert_eq!(
        (h.start, h.version),
        (
            StartLine::Request {
                method: b"GET",
                target: b"/very/long/pa",
                cut: true
            },
            None
        )
    );
    let h = parse_head(b"GET /x HTTP/1.", false).unwrap();
    assert_eq!(
        (h.start, h.version),
        (
            StartLine::Request {
                method: b"GET",
                target: b"/x",
                cut: false
            },
            None
        )
    );
    let h = parse_head(b"GET /x HTTP/1.0\r", false).unwrap();
    assert_eq!(h.version, Some(HttpVersion::Http10));
    assert_eq!(
        parse_head(b"GET", false),
        Err(ParseError::TruncatedStartLine)
    );
    assert_eq!(
        parse_head(b"GET ", false),
        Err(ParseError::TruncatedStartLine)
    );
    let h = parse_head(b"HTT", false).unwrap();
    assert_eq!(
        (h.start, h.version),
        (StartLine::Response { status: None }, None)
    );
    let h = parse_head(b"HTTP/1.1 20", false).unwrap();
    assert_eq!(h.start, StartLine::Response { status: None });
    let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false).unwrap();
    assert_eq!(
        (h.start, h.fields.content_length),
        (StartLine::Response { status: Some(200) }, None)
    );
}
