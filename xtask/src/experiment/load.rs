//! A small HTTP/1.1 load generator: keep-alive connections, one thread each, either
//! closed-loop (as fast as the server answers) or open-loop at a fixed total rate (what Debian's
//! wrk cannot do). Latency is measured from the time a request was *scheduled*, so a server
//! that falls behind shows its queueing delay (no coordinated omission). With `record` it keeps
//! every request's wall-clock window, status and body sizes, for matching against spans.

use std::{
    fmt::Write as _,
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// One request to send: method, target (path and query) and body.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) method: &'static str,
    pub(crate) target: String,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn get(target: impl Into<String>) -> Self {
        Self {
            method: "GET",
            target: target.into(),
            body: Vec::new(),
        }
    }

    fn bytes(&self, extra_headers: &str) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: mop-experiment\r\n{extra_headers}",
            self.method, self.target
        );
        if !self.body.is_empty() || self.method == "POST" {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Makes the request number `seq` (numbers are unique over a run, from 0).
pub(crate) type RequestFn = Arc<dyn Fn(u64) -> Request + Send + Sync>;

/// What to run.
#[derive(Clone)]
pub(crate) struct Plan {
    pub(crate) port: u16,
    /// Total requests per second over all connections; `None`: closed loop.
    pub(crate) rate: Option<f64>,
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
    /// Stop after this many requests in total (0: no limit).
    pub(crate) max_requests: u64,
    pub(crate) request: RequestFn,
    /// Extra header lines (each ending in `\r\n`), e.g. a `traceparent`.
    pub(crate) headers: String,
    pub(crate) record: bool,
}

/// One request as the client saw it.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) method: &'static str,
    pub(crate) target: String,
    pub(crate) request_body: usize,
    /// Just before the first byte was written (Unix nanoseconds).
    pub(crate) start_unix_nano: u64,
    /// Just after the last byte of the response was read.
    pub(crate) end_unix_nano: u64,
    pub(crate) status: u16,
    pub(crate) response_body: usize,
}

/// The result of a run.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) completed: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Latency of each completed request from its scheduled start, nanoseconds (sorted).
    pub(crate) latencies: Vec<u64>,
    pub(crate) records: Vec<Record>,
}

impl Outcome {
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub(crate) fn rps(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds far below 2^52")]
    pub(crate) fn latency_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        #[expect(
            clippy::cast_sign_loss,
            clippy::cast_possible_truncation,
            reason = "q in 0..=1 times a length"
        )]
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i] as f64 / 1e6
    }
}

/// Runs `plan` and returns what the client measured.
pub(crate) fn run(plan: &Plan) -> Outcome {
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let threads: Vec<_> = (0..plan.connections)
        .map(|i| {
            let plan = plan.clone();
            let seq = Arc::clone(&seq);
            let stop = Arc::clone(&stop);
            thread::spawn(move || connection(&plan, i, started, deadline, &seq, &stop))
        })
        .collect();
    let mut out = Outcome::default();
    for t in threads {
        let part = t.join().unwrap_or_default();
        out.completed += part.completed;
        out.errors += part.errors;
        out.latencies.extend(part.latencies);
        out.records.extend(part.records);
    }
    out.elapsed = started
        .elapsed()
        .min(plan.duration.max(Duration::from_millis(1)));
    if plan.max_requests > 0 {
        out.elapsed = started.elapsed();
    }
    out.latencies.sort_unstable();
    out.records.sort_by_key(|r| r.seq);
    out
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn connection(
    plan: &Plan,
    index: usize,
    started: Instant,
    deadline: Instant,
    seq: &AtomicU64,
    stop: &AtomicBool,
) -> Outcome {
    let mut out = Outcome::default();
    // Open loop: this connection sends every `interval`, offset so connections interleave.
    #[expect(clippy::cast_precision_loss, reason = "a handful of connections")]
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(plan.connections as f64 / r));
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a handful of connections: the index fits u32"
    )]
    let mut next = started
        + interval.map_or(Duration::ZERO, |i| {
            i / plan.connections as u32 * index as u32
        });
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let scheduled = if let Some(interval) = interval {
            if next > now {
                thread::sleep(next - now);
            }
            let scheduled = next;
            next += interval;
            scheduled
        } else {
            now
        };
        let n = seq.fetch_add(1, Ordering::Relaxed);
        if plan.max_requests > 0 && n >= plan.max_requests {
            stop.store(true, Ordering::Relaxed);
            break;
        }
        let request = (plan.request)(n);
        let bytes = request.bytes(&plan.headers);
        let Some(mut c) = conn.take().or_else(|| Conn::open(plan.port)) else {
            out.errors += 1;
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let start_unix_nano = unix_nanos();
        match c.exchange(&bytes, request.method == "HEAD") {
            Some(resp) => {
                let end_unix_nano = unix_nanos();
                let latency = scheduled.elapsed();
                out.completed += 1;
                out.latencies
                    .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
                if plan.record {
                    out.records.push(Record {
                        seq: n,
                        method: request.method,
                        target: request.target,
                        request_body: request.body.len(),
                        start_unix_nano,
                        end_unix_nano,
                        status: resp.status,
                        response_body: resp.body_len,
                    });
                }
                if !resp.close {
                    conn = Some(c);
                }
            }
            None => out.errors += 1,
        }
    }
    out
}

struct Response {
    status: u16,
    body_len: usize,
    close: bool,
}

/// One keep-alive connection and the bytes read past the last response.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> Option<Self> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
        stream.set_nodelay(true).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        Some(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    fn fill(&mut self) -> Option<()> {
        let mut chunk = [0_u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Some(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    fn take_until(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(delim.len()).position(|w| w == delim) {
                let rest = self.buf.split_off(i + delim.len());
                return Some(std::mem::replace(&mut self.buf, rest));
            }
            self.fill()?;
        }
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        while self.buf.len() < n {
            self.fill()?;
        }
        self.buf.drain(..n);
        Some(())
    }

    fn exchange(&mut self, request: &[u8], head: bool) -> Option<Response> {
        self.stream.write_all(request).ok()?;
        loop {
            let head_bytes = self.take_until(b"\r\n\r\n")?;
            let text = String::from_utf8_lossy(&head_bytes).to_ascii_lowercase();
            let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
            if (100..200).contains(&status) {
                continue;
            }
            let header = |name: &str| {
                text.lines().skip(1).find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().to_owned())
                })
            };
            let close = header("connection").is_some_and(|v| v.contains("close"))
                || text.starts_with("http/1.0");
            if head || status == 204 || status == 304 {
                return Some(Response {
                    status,
                    body_len: 0,
                    close,
                });
            }
            let body_len = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                let mut total = 0;
                loop {
                    let line = self.take_until(b"\r\n")?;
                    let size_text = String::from_utf8_lossy(&line);
                    let size =
                        usize::from_str_radix(size_text.trim().split(';').next()?, 16).ok()?;
                    if size == 0 {
                        while self.take_until(b"\r\n")?.len() > 2 {}
                        break total;
                    }
                    self.skip(size + 2)?;
                    total += size;
                }
            } else if let Some(len) = header("content-length") {
                let len: usize = len.parse().ok()?;
                self.skip(len)?;
                len
            } else {
                // Delimited by close.
                while self.fill().is_some() {}
                let n = self.buf.len();
                self.buf.clear();
                return Some(Response {
                    status,
                    body_len: n,
                    close: true,
                });
            };
            return Some(Response {
                status,
                body_len,
                close,
            });
        }
    }
}
