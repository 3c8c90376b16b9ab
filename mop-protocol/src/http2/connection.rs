//! One HTTP/2 connection: two frame readers and the state they share.

use super::core::Core;
use super::error::Http2Stats;
use super::reader::Reader;
use crate::exchange::{HttpExchange, Role};
use crate::segment::{Direction, Segment};

/// Bounds on what one connection's parser keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Limits {
    /// Most streams waiting for their responses. One more pushes the oldest out, emitted with
    /// what was known and counted as [`ParseError::TooManyStreams`](super::ParseError).
    pub max_streams: usize,
    /// Largest header field (one HPACK instruction) buffered while its bytes arrive over
    /// several frames or segments. A larger one makes the rest of its block unknown, counted as
    /// [`ParseError::HeaderBlockTooLarge`](super::ParseError). Header blocks themselves are
    /// decoded as they arrive and never buffered whole.
    pub max_header_block_bytes: usize,
    /// Cap on each direction's HPACK dynamic table, whatever the peers announce. A larger table
    /// is tracked up to the cap: entries past it become unknown, counted as
    /// [`ParseError::HpackTableOverCap`](super::ParseError).
    pub max_table_size: usize,
    /// Keep `grpc-message` (free text a server may fill with request data).
    pub keep_grpc_message: bool,
}

impl Http2Limits {
    /// Default of [`Http2Limits::max_streams`].
    pub const DEFAULT_MAX_STREAMS: usize = 1024;
    /// Default of [`Http2Limits::max_header_block_bytes`]: 64 KiB.
    pub const DEFAULT_MAX_HEADER_BLOCK_BYTES: usize = 64 * 1024;
    /// Default of [`Http2Limits::max_table_size`]: 64 KiB.
    pub const DEFAULT_MAX_TABLE_SIZE: usize = 64 * 1024;
}

impl Default for Http2Limits {
    fn default() -> Self {
        Self {
            max_streams: Self::DEFAULT_MAX_STREAMS,
            max_header_block_bytes: Self::DEFAULT_MAX_HEADER_BLOCK_BYTES,
            max_table_size: Self::DEFAULT_MAX_TABLE_SIZE,
            keep_grpc_message: false,
        }
    }
}

/// The HTTP/2 (and gRPC) parser of one TCP connection.
///
/// Feed it every captured segment of the connection, in order, with [`Http2Connection::feed`];
/// it pushes an [`HttpExchange`] when a stream's response ends (`END_STREAM`), when a stream is
/// reset, or when a GOAWAY abandons it. Call [`Http2Connection::on_close`] when the connection
/// closes: it emits the streams still open, with what is known.
///
/// The direction that sends the client preface (or, for a connection joined later, the first
/// header block with `:method`) is the client's: a process that reads requests is the server
/// of those exchanges, one that writes them the client.
#[derive(Debug)]
pub struct Http2Connection {
    readers: [Reader; 2],
    core: Core,
}

impl Default for Http2Connection {
    fn default() -> Self {
        Self::new(Http2Limits::default())
    }
}

const fn index(dir: Direction) -> usize {
    match dir {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Http2Connection {
    /// A parser for a connection with prior knowledge of HTTP/2: each direction starts with the
    /// client preface (then it is the client's) or with frames. A direction that starts with
    /// neither was joined after its start: the parser waits for a segment that starts with
    /// frames, and treats the HPACK table as unknown.
    pub fn new(limits: Http2Limits) -> Self {
        Self {
            readers: [
                Reader::new(Direction::Ingress),
                Reader::new(Direction::Egress),
            ],
            core: Core::new(limits),
        }
    }

    /// A parser for a connection that switched from HTTP/1.1 with `Upgrade: h2c`.
    ///
    /// `request` is the exchange [`Http1Connection`](crate::http1::Http1Connection) emitted for
    /// the upgrade request (its status is 101): it becomes stream 1, whose response comes over
    /// HTTP/2. Feed this parser the segment that carried the 101 response again (the one after
    /// which the HTTP/1 parser reported a tunnel), then everything after it: the parser skips
    /// the HTTP/1.1 response head and reads the server's frames after it; the client's side
    /// starts with the client preface. When the client's bytes are not the preface (the 101
    /// switched to something else, a WebSocket say), the parser emits `request` unchanged,
    /// counts [`ParseError::InvalidPreface`](super::ParseError), and ignores the rest.
    pub fn from_h2c_upgrade(limits: Http2Limits, request: HttpExchange) -> Self {
        let client = match request.role {
            Role::Server => Direction::Ingress,
            Role::Client => Direction::Egress,
        };
        let mut core = Core::new(limits);
        core.fresh_start(client.reverse());
        core.upgraded(request);
        core.stats.upgrades += 1;
        let mut readers = [
            Reader::new(Direction::Ingress),
            Reader::new(Direction::Egress),
        ];
        readers[index(client)] = Reader::expect_preface(client);
        readers[index(client.reverse())] = Reader::expect_upgrade_head(client.reverse());
        Self { readers, core }
    }

    /// Parses one captured syscall's bytes, moving in `dir`; completed exchanges are pushed to
    /// `out`.
    pub fn feed(&mut self, dir: Direction, seg: &Segment<'_>, out: &mut Vec<HttpExchange>) {
        if !self.core.dead {
            self.readers[index(dir)].feed(seg, &mut self.core, out);
        }
    }

    /// The connection closed at `ts_ns`: emits every stream still open, in stream order, with
    /// what is known (`status: None` when no response was seen).
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<HttpExchange>) {
        self.core.close(ts_ns, out);
    }

    /// The counters so far.
    pub fn stats(&self) -> &Http2Stats {
        &self.core.stats
    }

    /// The counters so far; resets them.
    pub fn take_stats(&mut self) -> Http2Stats {
        std::mem::take(&mut self.core.stats)
    }

    /// Moves the requests started since the last call into `out`.
    pub fn drain_starts(&mut self, out: &mut Vec<crate::exchange::RequestStart>) {
        out.append(&mut self.core.starts);
    }

    /// Streams waiting for their responses.
    pub fn open_streams(&self) -> usize {
        self.core.open_streams()
    }

    /// The direction requests travel in, once known.
    pub fn client_direction(&self) -> Option<Direction> {
        self.core.client
    }

    /// Heap bytes held by the parser (HPACK tables and buffers, streams), for memory bounds.
    pub fn heap_bytes(&self) -> usize {
        self.core.heap_bytes()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Http2Limits {
        &self.core.limits
    }
}
