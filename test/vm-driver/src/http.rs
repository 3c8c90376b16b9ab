//! A minimal HTTP/1.1 server and client with a fixed, known exchange plan.
//!
//! The plan is what `run` expects the agent to report: one server span and one client span
//! per request, with the method, path and status below.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::Duration,
};

/// One request of the plan and the response it must get.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Exchange {
    pub(crate) method: &'static str,
    /// The request target as sent (may carry a query string).
    pub(crate) target: String,
    /// The target without its query: the span's `url.path`.
    pub(crate) path: &'static str,
    /// Request body bytes (POST only).
    pub(crate) body: usize,
    pub(crate) status: u16,
}

/// The `i`-th request of every client: a mix of methods, statuses and a query string.
pub(crate) fn plan(i: usize) -> Exchange {
    match i % 4 {
        0 => Exchange {
            method: "GET",
            target: "/hello".to_owned(),
            path: "/hello",
            body: 0,
            status: 200,
        },
        1 => Exchange {
            method: "POST",
            target: "/echo".to_owned(),
            path: "/echo",
            body: 32 + i,
            status: 200,
        },
        2 => Exchange {
            method: "GET",
            target: "/missing".to_owned(),
            path: "/missing",
            body: 0,
            status: 404,
        },
        _ => Exchange {
            method: "GET",
            target: format!("/hello?i={i}"),
            path: "/hello",
            body: 0,
            status: 200,
        },
    }
}

/// The response body the server sends for a request.
fn response_body(method: &str, path: &str, body_len: usize) -> (u16, String) {
    match (method, path) {
        ("GET", "/hello") => (200, "hello\n".to_owned()),
        ("POST", "/echo") => (200, format!("received {body_len}\n")),
        _ => (404, "not found\n".to_owned()),
    }
}

/// A parsed message head: the first line and the headers that matter here.
struct Head {
    first_line: String,
    content_length: usize,
    close: bool,
}

/// Reads one message head; `None` at a clean end of stream before any byte.
fn read_head(reader: &mut impl BufRead) -> Result<Option<Head>, String> {
    let mut first_line = String::new();
    if reader
        .read_line(&mut first_line)
        .map_err(|e| format!("read: {e}"))?
        == 0
    {
        return Ok(None);
    }
    let mut head = Head {
        first_line: first_line.trim_end().to_owned(),
        content_length: 0,
        close: false,
    };
    loop {
        let mut line = String::new();
        if reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err("end of stream inside a message head".to_owned());
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(Some(head));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value
                .parse()
                .map_err(|_| format!("bad content-length {value:?}"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
}

fn read_body(reader: &mut impl Read, len: usize) -> Result<Vec<u8>, String> {
    let mut body = vec![0; len];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("reading a {len}-byte body: {e}"))?;
    Ok(body)
}

/// The socket to write to: `stream` itself, or with `dup` a `try_clone` of it (another file
/// descriptor for the same socket, as Rust programs that split a stream have).
fn writer_for(stream: &TcpStream, dup: bool) -> Result<Option<TcpStream>, String> {
    dup.then(|| stream.try_clone().map_err(|e| format!("dup: {e}")))
        .transpose()
}

/// Serves keep-alive connections on `127.0.0.1:port` until killed.
pub(crate) fn serve(port: u16, dup: bool) -> Result<(), String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    // `run` waits for this line before it starts the agent.
    println!("listening on 127.0.0.1:{port}");
    let _ = std::io::stdout().flush();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            if let Err(e) = serve_connection(&stream, dup) {
                eprintln!("mop-vm serve: {e}");
            }
        });
    }
    Ok(())
}

fn serve_connection(stream: &TcpStream, dup: bool) -> Result<(), String> {
    // By default reads and writes go through one file descriptor, as most servers do.
    let clone = writer_for(stream, dup)?;
    let mut writer = clone.as_ref().unwrap_or(stream);
    let mut reader = BufReader::new(stream);
    while let Some(head) = read_head(&mut reader)? {
        let mut parts = head.first_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let body = read_body(&mut reader, head.content_length)?;
        let (status, text) = response_body(method, path, body.len());
        let reason = if status == 200 { "OK" } else { "Not Found" };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        // One write per response: the capture sees the whole response in one buffer.
        writer
            .write_all(response.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        if head.close {
            break;
        }
    }
    Ok(())
}

/// Sends `count` requests of the plan over one keep-alive connection and checks each
/// response.
pub(crate) fn client(port: u16, count: usize, dup: bool) -> Result<(), String> {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let clone = writer_for(&stream, dup)?;
    let mut writer = clone.as_ref().unwrap_or(&stream);
    let mut reader = BufReader::new(&stream);
    for i in 0..count {
        let ex = plan(i);
        let mut request = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mop-vm\r\n",
            ex.method, ex.target
        );
        if ex.method == "POST" {
            let _ = write!(
                request,
                "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
                ex.body
            );
        }
        if i + 1 == count {
            request.push_str("Connection: close\r\n");
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.resize(bytes.len() + ex.body, b'x');
        writer
            .write_all(&bytes)
            .map_err(|e| format!("request {i}: write: {e}"))?;
        let head = read_head(&mut reader)?
            .ok_or_else(|| format!("request {i}: connection closed before a response"))?;
        let status: u16 = head
            .first_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("request {i}: bad status line {:?}", head.first_line))?;
        let body = read_body(&mut reader, head.content_length)?;
        let (want_status, want_body) = response_body(ex.method, ex.path, ex.body);
        if status != want_status || body != want_body.as_bytes() {
            return Err(format!(
                "request {i} ({} {}): got {status} {:?}, want {want_status} {want_body:?}",
                ex.method,
                ex.target,
                String::from_utf8_lossy(&body)
            ));
        }
    }
    Ok(())
}
