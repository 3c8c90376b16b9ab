//! Decoding ring-buffer records into borrowed, validated events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mop_common::{
    AF_INET, AF_INET6, ConnAddrs, DataEventHeader, EVENT_HEADER_LEN, EventKind, TAIL_BYTES,
    event::{DIR_INGRESS, FLAG_SENDFILE, FLAG_STREAM_SEQ, FLAG_TLS, ROLE_CLIENT, ROLE_SERVER},
};
use mop_protocol::{Direction, Segment};
use thiserror::Error;

/// Why a record was rejected (counted, never fatal).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header says.
    #[error("record of {0} bytes is truncated")]
    Truncated(usize),
    /// A kind this build does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

/// A validated record, borrowing its payload from the ring buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawEvent<'a> {
    /// What the record reports.
    pub kind: EventKind,
    /// The header, copied out of the ring.
    pub header: DataEventHeader,
    /// The captured head of the buffer (empty for non-data records).
    pub head: &'a [u8],
}

impl<'a> RawEvent<'a> {
    /// Validates `bytes` (one ring-buffer record).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < EVENT_HEADER_LEN {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        // SAFETY: the length is checked above and `DataEventHeader` is plain old data whose
        // every bit pattern is valid; the read is unaligned-safe.
        let header: DataEventHeader =
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DataEventHeader>()) };
        let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
        let head = bytes
            .get(EVENT_HEADER_LEN..EVENT_HEADER_LEN + header.captured_len as usize)
            .ok_or(DecodeError::Truncated(bytes.len()))?;
        if header.tail_len as usize > TAIL_BYTES {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        Ok(Self { kind, header, head })
    }

    /// Which way the bytes of a data record moved.
    pub fn direction(&self) -> Direction {
        if self.header.direction == DIR_INGRESS {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    }

    /// The tail bytes of a data record.
    pub fn tail(&self) -> &[u8] {
        &self.header.tail[..self.header.tail_len as usize]
    }

    /// The record as a parser segment: head, uncaptured gap, tail.
    pub fn segment(&self) -> Segment<'_> {
        let tail = self.tail();
        let known = (self.head.len() + tail.len()) as u64;
        Segment {
            head: self.head,
            gap: self.header.total_len.saturating_sub(known),
            tail,
            enter_ns: self.header.enter_ns,
            exit_ns: self.header.exit_ns,
            tid: self.header.tid,
        }
    }

    /// True when the bytes came from `sendfile` (never captured).
    pub fn is_sendfile(&self) -> bool {
        self.header.flags & FLAG_SENDFILE != 0
    }

    /// The socket's stream position right after this record's bytes, when the kernel read it.
    pub fn stream_seq(&self) -> Option<u32> {
        (self.header.flags & FLAG_STREAM_SEQ != 0).then_some(self.header.seq_end)
    }

    /// True when the payload is TLS plaintext read at the library, not socket bytes.
    pub fn is_tls(&self) -> bool {
        self.header.flags & FLAG_TLS != 0
    }

    /// The context of a trace-context record (`None` for other records or a short payload).
    pub fn trace_ctx(&self) -> Option<mop_common::TraceCtx> {
        if self.kind != EventKind::TraceCtx || self.head.len() < size_of::<mop_common::TraceCtx>() {
            return None;
        }
        // SAFETY: the length is checked above; `TraceCtx` is plain bytes, read unaligned.
        Some(unsafe { std::ptr::read_unaligned(self.head.as_ptr().cast::<mop_common::TraceCtx>()) })
    }

    /// The role the kernel saw the connection open with, when it saw it open.
    pub fn role_hint(&self) -> Option<mop_protocol::Role> {
        match self.header.role {
            ROLE_SERVER => Some(mop_protocol::Role::Server),
            ROLE_CLIENT => Some(mop_protocol::Role::Client),
            _ => None,
        }
    }
}

/// The local and remote socket addresses of a connection; v4-mapped IPv6 addresses are shown
/// as IPv4.
pub fn socket_addrs(a: &ConnAddrs) -> (SocketAddr, SocketAddr) {
    let ip = |bytes: &[u8; 16]| -> IpAddr {
        match a.family {
            AF_INET => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            AF_INET6 => {
                let v6 = Ipv6Addr::from(*bytes);
                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
            }
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    };
    (
        SocketAddr::new(ip(&a.local_addr), a.local_port),
        SocketAddr::new(ip(&a.remote_addr), a.remote_port),
    )
}

#[cfg(test)]
mod tests {
    use mop_common::event::DIR_EGRESS;

    use super::*;

    fn record(captured: &[u8], total: u64, tail: &[u8]) -> Vec<u8> {
        let mut h: DataEventHeader = unsafe { std::mem::zeroed() };
        h.kind = EventKind::Data as u32;
        h.direction = DIR_EGRESS;
        h.captured_len = captured.len() as u32;
        h.total_len = total;
        h.tail_len = tail.len() as u32;
        h.tail[..tail.len()].copy_from_slice(tail);
        let mut out = vec![0u8; EVENT_HEADER_LEN];
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<DataEventHeader>(), h) };
        out.extend_from_slice(captured);
        out
    }

    #[test]
    fn decodes_head_gap_and_tail() {
        let bytes = record(b"HTTP/1.1 200 OK\r\n", 1000, b"\r\n0\r\n\r\n");
        let ev = RawEvent::decode(&bytes).unwrap();
        assert_eq!(ev.direction(), Direction::Egress);
        let seg = ev.segment();
        assert_eq!(seg.head, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(seg.tail, b"\r\n0\r\n\r\n");
        assert_eq!(seg.total_len(), 1000);
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(
            RawEvent::decode(&[0; 10]).unwrap_err(),
            DecodeError::Truncated(10)
        );
        let mut bytes = record(b"abc", 3, b"");
        bytes.truncate(EVENT_HEADER_LEN + 2);
        assert!(RawEvent::decode(&bytes).is_err());
        let mut bytes = record(b"", 0, b"");
        bytes[0] = 99;
        assert_eq!(
            RawEvent::decode(&bytes).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
    }

    #[test]
    fn shows_v4_mapped_addresses_as_v4() {
        let mut a = ConnAddrs {
            family: AF_INET6,
            local_port: 80,
            remote_port: 5555,
            ..ConnAddrs::default()
        };
        a.local_addr[10] = 0xff;
        a.local_addr[11] = 0xff;
        a.local_addr[12..].copy_from_slice(&[127, 0, 0, 1]);
        let (local, _) = socket_addrs(&a);
        assert_eq!(local, "127.0.0.1:80".parse().unwrap());
    }
}
