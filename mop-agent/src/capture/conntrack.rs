//! Per-connection state: which protocol a connection speaks, and its parser.
//!
//! One tracker is owned by the capture task; it is fed every decoded record in ring order and
//! hands completed exchanges, with their connection's addresses, to a callback. Memory is
//! bounded: at most `max_connections` entries, the least recently active evicted first.

use std::{collections::HashMap, net::SocketAddr};

use mop_common::EventKind;
use mop_protocol::{
    HttpExchange,
    http1::{self, Http1Connection, Http1Limits},
};

use super::event::{RawEvent, socket_addrs};

/// Data records of a connection inspected before it is declared a protocol mop does not parse.
///
/// Generous, because a connection joined mid-stream (the agent started after it opened) may
/// carry body bytes for a while before the next message head.
const SNIFF_SEGMENTS: u8 = 32;

/// An exchange with the connection it happened on.
#[derive(Clone, Debug)]
pub struct ConnExchange {
    /// The instrumented process.
    pub pid: u32,
    /// The connection (unique per boot).
    pub conn_id: u64,
    /// The process's end of the connection.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    /// The request and response.
    pub exchange: HttpExchange,
    /// Read as TLS plaintext (the scheme is `https`).
    pub tls: bool,
}

/// What a connection speaks.
enum Protocol {
    /// No payload seen yet that tells; counts the segments inspected.
    Undecided(u8),
    /// HTTP/1.x.
    Http1(Box<Http1Connection>),
    /// Something mop does not parse (or a tunnel); its bytes are ignored.
    Opaque,
}

struct Connection {
    local: SocketAddr,
    remote: SocketAddr,
    protocol: Protocol,
    last_seen_ns: u64,
    /// Plaintext from the TLS library has been seen: socket bytes (ciphertext) are ignored
    /// from now on, and the protocol was decided on the plaintext.
    tls: bool,
}

/// Key of a tracked connection: the kernel's connection id is unique per boot, the pid keeps
/// per-process cleanup cheap to express.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    pid: u32,
    conn_id: u64,
}

/// Counters the tracker accumulates between reads by the capture stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// HTTP/1 parse errors.
    pub http1_errors: u64,
    /// Connections evicted because the table was full.
    pub evicted: u64,
}

/// The connection table.
pub struct ConnTracker {
    conns: HashMap<Key, Connection>,
    max_connections: usize,
    http1_limits: Http1Limits,
    scratch: Vec<HttpExchange>,
    stats: TrackerStats,
}

impl ConnTracker {
    /// An empty table holding at most `max_connections` connections.
    pub fn new(max_connections: usize, http1_limits: Http1Limits) -> Self {
        Self {
            conns: HashMap::new(),
            max_connections: max_connections.max(1),
            http1_limits,
            scratch: Vec::with_capacity(8),
            stats: TrackerStats::default(),
        }
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection is held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Returns the counters accumulated since the last call and resets them.
    pub fn take_stats(&mut self) -> TrackerStats {
        std::mem::take(&mut self.stats)
    }

    /// Feeds one record; completed exchanges go to `emit`.
    pub fn on_event(&mut self, ev: &RawEvent<'_>, emit: &mut impl FnMut(ConnExchange)) {
        let key = Key {
            pid: ev.header.pid,
            conn_id: ev.header.conn_id,
        };
        match ev.kind {
            EventKind::ConnOpen => {
                // A new connection id: nothing to carry over.
                self.insert(key, ev);
            }
            EventKind::Data => self.on_data(key, ev, emit),
            // Not about a connection: the capture stage routes exec reports to discovery.
            EventKind::ProcExec => {}
            EventKind::ConnClose => {
                if let Some(mut conn) = self.conns.remove(&key) {
                    if let Protocol::Http1(parser) = &mut conn.protocol {
                        parser.on_close(ev.header.exit_ns, &mut self.scratch);
                        self.stats.http1_errors += parser.take_stats().errors_total();
                    }
                    self.flush(key, &conn, emit);
                }
            }
        }
    }

    fn on_data(&mut self, key: Key, ev: &RawEvent<'_>, emit: &mut impl FnMut(ConnExchange)) {
        if !self.conns.contains_key(&key) {
            self.insert(key, ev);
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.last_seen_ns = ev.header.exit_ns;
        if ev.is_tls() != conn.tls {
            if conn.tls {
                // Ciphertext of a connection whose plaintext we read: never parsed.
                return;
            }
            // The first plaintext: whatever the ciphertext looked like does not count.
            conn.tls = true;
            conn.protocol = Protocol::Undecided(0);
        }
        if let Protocol::Undecided(seen) = conn.protocol {
            conn.protocol = sniff(ev.head, seen, self.http1_limits);
        }
        let Protocol::Http1(parser) = &mut conn.protocol else {
            return;
        };
        parser.feed(ev.direction(), &ev.segment(), &mut self.scratch);
        self.stats.http1_errors += parser.take_stats().errors_total();
        if parser.is_tunnel() {
            conn.protocol = Protocol::Opaque;
        }
        if !self.scratch.is_empty() {
            let (local, remote, tls) = (conn.local, conn.remote, conn.tls);
            for exchange in self.scratch.drain(..) {
                emit(ConnExchange {
                    pid: key.pid,
                    conn_id: key.conn_id,
                    local,
                    remote,
                    exchange,
                    tls,
                });
            }
        }
    }

    fn flush(&mut self, key: Key, conn: &Connection, emit: &mut impl FnMut(ConnExchange)) {
        for exchange in self.scratch.drain(..) {
            emit(ConnExchange {
                pid: key.pid,
                conn_id: key.conn_id,
                local: conn.local,
                remote: conn.remote,
                exchange,
                tls: conn.tls,
            });
        }
    }

    fn insert(&mut self, key: Key, ev: &RawEvent<'_>) {
        if self.conns.len() >= self.max_connections && !self.conns.contains_key(&key) {
            self.evict_oldest();
        }
        let (local, remote) = socket_addrs(&ev.header.addrs);
        self.conns.insert(
            key,
            Connection {
                local,
                remote,
                protocol: Protocol::Undecided(0),
                last_seen_ns: ev.header.exit_ns,
                tls: false,
            },
        );
    }

    /// Drops the least recently active eighth of the table (amortises the scan).
    fn evict_oldest(&mut self) {
        let mut ages: Vec<u64> = self.conns.values().map(|c| c.last_seen_ns).collect();
        let n = (ages.len() / 8).max(1);
        let (_, cutoff, _) = ages.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        let before = self.conns.len();
        self.conns.retain(|_, c| c.last_seen_ns > cutoff);
        self.stats.evicted += (before - self.conns.len()) as u64;
    }

    /// Forgets every connection of a process that exited.
    pub fn forget_pid(&mut self, pid: u32) {
        self.conns.retain(|k, _| k.pid != pid);
    }

    /// Drops connections idle since before `cutoff_ns` (monotonic), flushing what their parsers
    /// still hold as if they had closed.
    pub fn expire_idle(&mut self, cutoff_ns: u64, emit: &mut impl FnMut(ConnExchange)) {
        let idle: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_seen_ns < cutoff_ns)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            if let Some(mut conn) = self.conns.remove(&key) {
                if let Protocol::Http1(parser) = &mut conn.protocol {
                    parser.on_close(conn.last_seen_ns, &mut self.scratch);
                }
                self.flush(key, &conn, emit);
            }
        }
    }
}

/// Decides a connection's protocol from a data record's head.
fn sniff(head: &[u8], seen: u8, limits: Http1Limits) -> Protocol {
    if head.is_empty() {
        return Protocol::Undecided(seen);
    }
    if http1::looks_like_request(head) || http1::looks_like_response(head) {
        return Protocol::Http1(Box::new(Http1Connection::new(limits)));
    }
    if is_tls_record(head) {
        // Encrypted bytes never make spans; TLS is read at the library (uprobes) instead.
        return Protocol::Opaque;
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

    #[test]
    fn sniffs_http_tls_and_gives_up_on_noise() {
        let limits = Http1Limits::default();
        assert!(matches!(
            sniff(b"GET / HTTP/1.1\r\n", 0, limits),
            Protocol::Http1(_)
        ));
        assert!(matches!(
            sniff(b"HTTP/1.1 200 OK\r\n", 0, limits),
            Protocol::Http1(_)
        ));
        assert!(matches!(
            sniff(&[22, 3, 1, 0, 5], 0, limits),
            Protocol::Opaque
        ));
        assert!(matches!(sniff(b"", 5, limits), Protocol::Undecided(5)));
        assert!(matches!(
            sniff(b"\x00\x01", 0, limits),
            Protocol::Undecided(1)
        ));
        assert!(matches!(
            sniff(b"\x00\x01", SNIFF_SEGMENTS - 1, limits),
            Protocol::Opaque
        ));
    }
}
