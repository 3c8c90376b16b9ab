//! A raw socket HTTP/1.1 client, for what curl cannot do: pipelining (several requests in one
//! write) and requests split into tiny writes. It runs in the test process, which no test
//! instruments, and controls every write boundary (`TCP_NODELAY`, one `write` per piece).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    thread,
    time::Duration,
};

use crate::util;

/// Bound on every read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One response as read from the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawResponse {
    /// Status code of the final response (interim 1xx responses are skipped).
    pub status: u16,
    /// Body bytes (decoded when chunked; 0 for HEAD).
    pub body_len: usize,
}

/// The responses of one connection and its wall-clock window.
#[derive(Clone, Debug)]
pub struct RawExchange {
    /// Just before connecting (Unix nanoseconds).
    pub start_unix_nano: u64,
    /// Just after the last response was read (Unix nanoseconds).
    pub end_unix_nano: u64,
    /// One per request, in order.
    pub responses: Vec<RawResponse>,
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
    stream
}

/// Sends every request of `requests` in ONE write, then reads one response per request.
pub fn pipelined(port: u16, requests: &[&str]) -> RawExchange {
    let start_unix_nano = util::unix_nanos();
    let mut stream = connect(port);
    let all: String = requests.concat();
    stream
        .write_all(all.as_bytes())
        .expect("writing the pipeline");
    let mut reader = ResponseReader::new(stream);
    let responses = requests
        .iter()
        .map(|r| reader.read_response(is_head(r)))
        .collect();
    RawExchange {
        start_unix_nano,
        end_unix_nano: util::unix_nanos(),
        responses,
    }
}

/// Sends each request `piece` bytes per write with `pause` between writes, and reads its
/// response before sending the next, all on one connection.
pub fn split_writes(port: u16, requests: &[&[u8]], piece: usize, pause: Duration) -> RawExchange {
    let start_unix_nano = util::unix_nanos();
    let stream = connect(port);
    let mut writer = stream.try_clone().expect("cloning the socket");
    let mut reader = ResponseReader::new(stream);
    let mut responses = Vec::new();
    for request in requests {
        for chunk in request.chunks(piece) {
            writer.write_all(chunk).expect("writing a piece");
            thread::sleep(pause);
        }
        let head = is_head(&String::from_utf8_lossy(request));
        responses.push(reader.read_response(head));
    }
    RawExchange {
        start_unix_nano,
        end_unix_nano: util::unix_nanos(),
        responses,
    }
}

fn is_head(request: &str) -> bool {
    request.starts_with("HEAD ")
}

/// Reads HTTP/1.1 responses from a socket, keeping bytes that belong to the next one.
struct ResponseReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl ResponseReader {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) {
        let mut chunk = vec![0_u8; 16384];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed mid-response; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "reading a response: {e}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Takes the buffered bytes up to and including the first `delim`, reading more as needed.
    fn take_until(&mut self, delim: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(delim.len()).position(|w| w == delim) {
                let rest = self.buf.split_off(i + delim.len());
                return std::mem::replace(&mut self.buf, rest);
            }
            self.fill();
        }
    }

    fn take_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill();
        }
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    fn read_response(&mut self, head_request: bool) -> RawResponse {
        loop {
            let head = String::from_utf8_lossy(&self.take_until(b"\r\n\r\n")).into_owned();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line in {head:?}"));
            if (100..200).contains(&status) {
                continue;
            }
            let header = |name: &str| {
                head.lines().skip(1).find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_owned())
                })
            };
            if head_request || status == 204 || status == 304 {
                return RawResponse {
                    status,
                    body_len: 0,
                };
            }
            let chunked = header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            let body_len = if chunked {
                self.read_chunked()
            } else {
                let len: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("response without a length: {head:?}"));
                self.take_exact(len).len()
            };
            return RawResponse { status, body_len };
        }
    }

    fn read_chunked(&mut self) -> usize {
        let mut total = 0;
        loop {
            let line = String::from_utf8_lossy(&self.take_until(b"\r\n")).into_owned();
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                // Trailers (none expected), then the final CRLF.
                while self.take_until(b"\r\n").len() > 2 {}
                return total;
            }
            total += self.take_exact(size).len();
            self.take_exact(2);
        }
    }
}
