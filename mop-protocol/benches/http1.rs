//! HTTP/1 parser throughput on recorded traffic: keep-alive streams of small exchanges (whole
//! and cut by a 256-byte capture window), a large download, chunked bodies, pipelining, and
//! the worst case of one byte per segment.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mop_protocol::http1::Http1Connection;
use mop_protocol::{Direction, Segment};

/// `(direction as seen by the server, bytes)` of a recorded connection.
fn fixture(name: &str) -> Vec<(Direction, Vec<u8>)> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "http1",
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
        let dir = if dir == ">" {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        out.push((dir, rest[nl + 1..nl + 1 + len].to_vec()));
        rest = &rest[nl + 2 + len..];
    }
    out
}

/// A keep-alive connection: the request/response pairs of `name`, `repeat` times.
fn keepalive(name: &str, repeat: usize) -> Vec<(Direction, Vec<u8>)> {
    let one = fixture(name);
    (0..repeat).flat_map(|_| one.iter().cloned()).collect()
}

/// What the kernel gives with a capture window of `window` bytes and a 16-byte tail.
fn capture(b: &[u8], window: usize) -> (&[u8], u64, &[u8]) {
    if b.len() <= window {
        return (b, 0, &[]);
    }
    let tail = (b.len() - window).min(16);
    (
        &b[..window],
        (b.len() - window - tail) as u64,
        &b[b.len() - tail..],
    )
}

fn feed_all(segs: &[(Direction, Vec<u8>)], window: usize, piece: usize) -> usize {
    let mut conn = Http1Connection::default();
    let mut out = Vec::with_capacity(1024);
    let mut n = 0;
    for (i, (dir, bytes)) in segs.iter().enumerate() {
        let t = i as u64 * 1000;
        for p in bytes.chunks(piece) {
            let (head, gap, tail) = capture(p, window);
            conn.feed(
                *dir,
                &Segment {
                    head,
                    gap,
                    tail,
                    enter_ns: t,
                    exit_ns: t + 10,
                    tid: 1,
                },
                &mut out,
            );
        }
        if out.len() > 512 {
            n += out.len();
            out.clear();
        }
    }
    conn.on_close(u64::MAX, &mut out);
    n + out.len()
}

type Recording = Vec<(Direction, Vec<u8>)>;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("http1");
    // (name, segments, capture window, bytes per segment at most)
    let cases: [(&str, Recording, usize, usize); 7] = [
        (
            "keepalive_1000x_nginx",
            keepalive("nginx_keepalive", 500),
            usize::MAX,
            usize::MAX,
        ),
        (
            "keepalive_1000x_nginx_window256",
            keepalive("nginx_keepalive", 500),
            256,
            usize::MAX,
        ),
        (
            "keepalive_1000x_big_headers_window256",
            keepalive("nginx_big_headers", 1000),
            256,
            usize::MAX,
        ),
        (
            "pipelined_300x",
            keepalive("nginx_pipelined", 100),
            usize::MAX,
            usize::MAX,
        ),
        (
            "chunked_response_1000x",
            keepalive("py_chunked_response", 1000),
            usize::MAX,
            usize::MAX,
        ),
        (
            "download_256k",
            fixture("nginx_big"),
            usize::MAX,
            usize::MAX,
        ),
        (
            "byte_per_segment_nginx",
            keepalive("nginx_keepalive", 10),
            usize::MAX,
            1,
        ),
    ];
    for (name, segs, window, piece) in &cases {
        let bytes: usize = segs.iter().map(|(_, b)| b.len()).sum();
        let expect = feed_all(segs, *window, *piece);
        assert!(expect > 0, "{name}");
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(*name, |b| {
            b.iter(|| black_box(feed_all(black_box(segs), *window, *piece)));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
