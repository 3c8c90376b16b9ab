//! HTTP/2 parser throughput on a realistic gRPC connection: HPACK decoding of the header blocks
//! grpcio sends (the first, literal-heavy ones and the steady state of indexed references), and
//! whole-connection frame parsing of 1000 unary calls, with DATA captured or skipped as gaps the
//! way the frame-aware kernel capture delivers them, plus a recorded connection as it came.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mop_protocol::http2::hpack::{Decoder, FieldSink};
use mop_protocol::http2::{Http2Connection, Http2Limits, PREFACE};
use mop_protocol::{Direction, Segment};

/// `(client to server, bytes)` of a recorded connection.
fn fixture(name: &str) -> Vec<(bool, Vec<u8>)> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "http2",
        &format!("{name}.seg"),
    ]
    .iter()
    .collect();
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let line = std::str::from_utf8(&rest[..nl]).unwrap();
        let (dir, len) = line.split_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        out.push((dir == ">", rest[nl + 1..nl + 1 + len].to_vec()));
        rest = &rest[nl + 2 + len..];
    }
    out
}

/// A frame of the recorded stream: `(type, flags, stream, payload)`.
type Frame = (u8, u8, u32, Vec<u8>);

/// The frames one direction of a recorded connection carried.
fn frames(rec: &[(bool, Vec<u8>)], c2s: bool) -> Vec<Frame> {
    let mut bytes: Vec<u8> = rec
        .iter()
        .filter(|(c, _)| *c == c2s)
        .flat_map(|(_, b)| b.clone())
        .collect();
    if bytes.starts_with(PREFACE) {
        bytes.drain(..PREFACE.len());
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let id = u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
        out.push((
            bytes[at + 3],
            bytes[at + 4],
            id,
            bytes[at + 9..at + 9 + len].to_vec(),
        ));
        at += 9 + len;
    }
    out
}

fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The header blocks of `grpc_calls`' first two calls, by role: `(first call, second call)`.
struct Blocks {
    request: (Vec<u8>, Vec<u8>),
    response: (Vec<u8>, Vec<u8>),
    trailers: (Vec<u8>, Vec<u8>),
}

fn blocks() -> Blocks {
    let rec = fixture("grpc_calls");
    let headers = |c2s, stream| -> Vec<Vec<u8>> {
        frames(&rec, c2s)
            .into_iter()
            .filter(|f| f.0 == 1 && f.2 == stream)
            .map(|f| f.3)
            .collect()
    };
    let (c1, c3, s1, s3) = (
        headers(true, 1),
        headers(true, 3),
        headers(false, 1),
        headers(false, 3),
    );
    Blocks {
        request: (c1[0].clone(), c3[0].clone()),
        response: (s1[0].clone(), s3[0].clone()),
        trailers: (s1[1].clone(), s3[1].clone()),
    }
}

/// A unary gRPC connection of `calls` calls as the client's and the server's writes: the first
/// call's blocks insert into the dynamic tables, the rest refer to them (grpcio's steady state).
/// Each segment is `(client to server, bytes, data ranges)`.
fn grpc_connection(calls: u32, message: usize) -> Vec<(bool, Vec<u8>)> {
    let b = blocks();
    let mut segs = Vec::new();
    let mut start = PREFACE.to_vec();
    encode(4, 0, 0, &[], &mut start);
    segs.push((true, start));
    let mut s = Vec::new();
    encode(4, 0, 0, &[], &mut s);
    encode(4, 1, 0, &[], &mut s);
    segs.push((false, s));
    let grpc_message = |n: usize| {
        let mut m = vec![0u8];
        m.extend_from_slice(&(n as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(b'x', n));
        m
    };
    for k in 0..calls {
        let id = 2 * k + 1;
        let pick = |p: &(Vec<u8>, Vec<u8>)| if k == 0 { p.0.clone() } else { p.1.clone() };
        let mut req = Vec::new();
        encode(1, 0x4, id, &pick(&b.request), &mut req);
        encode(0, 0x1, id, &grpc_message(message), &mut req);
        segs.push((true, req));
        let mut resp = Vec::new();
        encode(1, 0x4, id, &pick(&b.response), &mut resp);
        encode(0, 0, id, &grpc_message(message), &mut resp);
        encode(1, 0x5, id, &pick(&b.trailers), &mut resp);
        segs.push((false, resp));
    }
    segs
}

/// One segment per frame, DATA payloads as gaps: what the frame-aware capture delivers.
fn frame_aware(conn: &[(bool, Vec<u8>)]) -> Vec<(bool, Vec<u8>, u64)> {
    let mut out = Vec::new();
    for (c2s, bytes) in conn {
        let mut at = 0;
        if bytes.starts_with(PREFACE) {
            out.push((*c2s, PREFACE.to_vec(), 0));
            at = PREFACE.len();
        }
        while at + 9 <= bytes.len() {
            let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
            if bytes[at + 3] == 0 {
                out.push((*c2s, bytes[at..at + 9].to_vec(), len as u64));
            } else {
                out.push((*c2s, bytes[at..at + 9 + len].to_vec(), 0));
            }
            at += 9 + len;
        }
    }
    out
}

fn feed_all(segs: &[(bool, Vec<u8>, u64)]) -> usize {
    let mut conn = Http2Connection::new(Http2Limits::default());
    let mut out = Vec::new();
    for (c2s, head, gap) in segs {
        let dir = if *c2s {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let seg = Segment {
            head,
            gap: *gap,
            tail: &[],
            enter_ns: 1,
            exit_ns: 2,
            tid: 3,
        };
        conn.feed(dir, &seg, &mut out);
    }
    conn.on_close(4, &mut out);
    out.len()
}

/// Keeps what the agent keeps: a count of fields, as cheap as a sink gets.
struct Count(usize);

impl FieldSink for Count {
    fn wants_value(&mut self, name: &[u8]) -> bool {
        matches!(
            name,
            b":path" | b":method" | b":status" | b"content-type" | b"grpc-status"
        )
    }
    fn field(&mut self, _: Option<&[u8]>, _: Option<&[u8]>) {
        self.0 += 1;
    }
}

fn bench(c: &mut Criterion) {
    let b = blocks();
    let mut g = c.benchmark_group("hpack");
    let first = [&b.request.0, &b.response.0, &b.trailers.0];
    g.throughput(Throughput::Bytes(
        first.iter().map(|x| x.len() as u64).sum(),
    ));
    g.bench_function("grpc_first_call_blocks", |bench| {
        bench.iter(|| {
            let (mut req, mut resp) = (Decoder::new(65536, 65536), Decoder::new(65536, 65536));
            let mut n = Count(0);
            req.decode_block(black_box(&b.request.0), &mut n);
            resp.decode_block(black_box(&b.response.0), &mut n);
            resp.decode_block(black_box(&b.trailers.0), &mut n);
            n.0
        });
    });
    let steady = [&b.request.1, &b.response.1, &b.trailers.1];
    g.throughput(Throughput::Bytes(
        1000 * steady.iter().map(|x| x.len() as u64).sum::<u64>(),
    ));
    g.bench_function("grpc_steady_state_1000_calls", |bench| {
        let (mut req, mut resp) = (Decoder::new(65536, 65536), Decoder::new(65536, 65536));
        let mut n = Count(0);
        req.decode_block(&b.request.0, &mut n);
        resp.decode_block(&b.response.0, &mut n);
        resp.decode_block(&b.trailers.0, &mut n);
        bench.iter(|| {
            for _ in 0..1000 {
                req.decode_block(black_box(&b.request.1), &mut n);
                resp.decode_block(black_box(&b.response.1), &mut n);
                resp.decode_block(black_box(&b.trailers.1), &mut n);
            }
        });
    });
    g.finish();

    let mut g = c.benchmark_group("frames");
    for message in [100, 4000] {
        let conn = grpc_connection(1000, message);
        let whole: Vec<_> = conn.iter().map(|(c, b)| (*c, b.clone(), 0)).collect();
        let bytes: u64 = conn.iter().map(|(_, b)| b.len() as u64).sum();
        assert_eq!(feed_all(&whole), 1000);
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(format!("grpc_1000_calls_{message}B_whole"), |bench| {
            bench.iter(|| feed_all(black_box(&whole)));
        });
        let aware = frame_aware(&conn);
        assert_eq!(feed_all(&aware), 1000);
        g.bench_function(format!("grpc_1000_calls_{message}B_frame_aware"), |bench| {
            bench.iter(|| feed_all(black_box(&aware)));
        });
    }
    let rec: Vec<_> = fixture("grpc_concurrent")
        .into_iter()
        .map(|(c, b)| (c, b, 0))
        .collect();
    g.throughput(Throughput::Bytes(
        rec.iter().map(|(_, b, _)| b.len() as u64).sum(),
    ));
    g.bench_function("recorded_grpc_concurrent", |bench| {
        bench.iter(|| feed_all(black_box(&rec)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
