//! Load written into the test itself, from plain sockets: keep-alive connections sending
//! requests in tiny writes, short connections (one request each), and slowloris connections
//! that never finish their request. Every generator is bounded in time and connections.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Shutdown, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// Bound on one socket operation, so that a stalled server cannot hang a generator.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a generator managed.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodStats {
    /// Requests answered (a complete response read).
    pub requests: u64,
    /// Connections or requests that failed (refused, reset, timed out).
    pub errors: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl FloodStats {
    /// Requests answered per second.
    #[expect(
        clippy::cast_precision_loss,
        reason = "a rate for a report; counts stay far below 2^52"
    )]
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// `GET path` with a `Host` header, keep-alive.
fn request(path: &str, close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n")
        .into_bytes()
}

/// Reads one response with a `Content-Length` body (what every generator's server sends);
/// `buf` keeps bytes read past it.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + length;
            if buf.len() >= total {
                buf.drain(..total);
                return Ok(());
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs `worker` on `threads` threads until `duration` passed; sums what they counted.
fn run_workers(
    threads: usize,
    duration: Duration,
    worker: impl Fn(&AtomicBool, &AtomicU64, &AtomicU64) + Send + Sync + 'static,
) -> FloodStats {
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let worker = Arc::new(worker);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, requests, errors, worker) = (
                Arc::clone(&stop),
                Arc::clone(&requests),
                Arc::clone(&errors),
                Arc::clone(&worker),
            );
            thread::spawn(move || worker(&stop, &requests, &errors))
        })
        .collect();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    FloodStats {
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// `connections` keep-alive connections to 127.0.0.1:`port`, each sending `GET path` again and
/// again for `duration`, every request written `piece` bytes per `write` (`TCP_NODELAY`), each
/// response read before the next request.
pub fn tiny_writes(
    port: u16,
    path: &str,
    connections: usize,
    piece: usize,
    duration: Duration,
) -> FloodStats {
    let req = request(path, false);
    run_workers(connections, duration, move |stop, requests, errors| {
        let mut buf = Vec::new();
        let mut stream = None;
        while !stop.load(Ordering::Relaxed) {
            if stream.is_none() {
                stream = connect(port).ok();
                if stream.is_none() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            let Some(s) = stream.as_mut() else {
                continue;
            };
            let sent = req.chunks(piece.max(1)).try_for_each(|p| s.write_all(p));
            if sent.and_then(|()| read_response(s, &mut buf)).is_ok() {
                requests.fetch_add(1, Ordering::Relaxed);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
                buf.clear();
                stream = None;
            }
        }
    })
}

/// `total` connections to 127.0.0.1:`port`, `parallel` at a time, each sending one
/// `GET path` with `Connection: close`, reading the response and closing.
pub fn short_connections(port: u16, path: &str, total: u64, parallel: usize) -> FloodStats {
    let req = request(path, true);
    let left = Arc::new(AtomicU64::new(total));
    let started = Instant::now();
    let stats = run_workers(parallel, Duration::ZERO, {
        let left = Arc::clone(&left);
        move |_, requests, errors| {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let mut buf = Vec::new();
                let done = connect(port).and_then(|mut s| {
                    s.write_all(&req)?;
                    read_response(&mut s, &mut buf)?;
                    s.shutdown(Shutdown::Both)
                });
                match done {
                    Ok(()) => requests.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    });
    FloodStats {
        elapsed: started.elapsed(),
        ..stats
    }
}

/// Slowloris: `connections` connections to 127.0.0.1:`port`, each sending a request head one
/// byte every `interval` and never the blank line that ends it, for `duration`. Returns how
/// many were still open at the end.
pub fn slowloris(port: u16, connections: usize, interval: Duration, duration: Duration) -> usize {
    let mut streams: Vec<TcpStream> = (0..connections)
        .filter_map(|_| connect(port).ok())
        .collect();
    let head = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ";
    let deadline = Instant::now() + duration;
    let mut i = 0;
    while Instant::now() < deadline {
        let byte = head.get(i).copied().unwrap_or(b'a');
        streams.retain_mut(|s| s.write_all(&[byte]).is_ok());
        i += 1;
        thread::sleep(interval);
    }
    streams.len()
}
