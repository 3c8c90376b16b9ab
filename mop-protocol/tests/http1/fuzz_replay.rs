//! Inputs the fuzz targets found, replayed through the same drivers
//! (`mop_protocol::http1::fuzzing`) from `tests/fixtures/fuzz/<target>/`.

use mop_protocol::http1::{Http1Connection, fuzzing};
use mop_protocol::{Direction, Segment};

fn dir() -> std::path::PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "fuzz",
        "http1",
    ]
    .iter()
    .collect()
}

#[test]
fn every_saved_fuzz_input_replays_cleanly() {
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let _ = fuzzing::segments(&data);
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn cut_status_line_keeps_the_response_time_and_says_so() {
    // First fuzz find: with an 8-byte window the status line of the response was cut; the
    // exchange keeps when the response came and flags the cut instead of inventing a status.
    let out = fuzzing::segments(&std::fs::read(dir().join("cut-status-line")).unwrap());
    let x = out.iter().find(|x| x.method == "HEAD").unwrap();
    assert_eq!(
        (x.status, x.response_start_ns, x.response_head_truncated),
        (None, 20, true)
    );
}

#[test]
fn every_saved_split_fuzz_input_replays_cleanly() {
    let dir = dir().with_file_name("http1_split");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        fuzzing::split(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn control_bytes_in_a_reason_phrase_are_rejected_however_the_head_arrives() {
    // Found by `http1_split`: "HTTP/1.1 200 O\0\0..." was accepted in one piece and rejected
    // byte by byte.
    for piece in [usize::MAX, 1] {
        let mut conn = Http1Connection::default();
        let mut out = Vec::new();
        let seg = |b| Segment {
            head: b,
            gap: 0,
            tail: &[],
            enter_ns: 1,
            exit_ns: 2,
            tid: 3,
        };
        conn.feed(
            Direction::Ingress,
            &seg(b"GET / HTTP/1.1\r\n\r\n"),
            &mut out,
        );
        for p in b"HTTP/1.1 200 O\0K\r\nContent-Length: 0\r\n\r\n".chunks(piece) {
            conn.feed(Direction::Egress, &seg(p), &mut out);
        }
        assert_eq!(
            conn.stats()
                .count(mop_protocol::http1::ParseError::InvalidStartLine),
            1,
            "{piece}"
        );
        assert!(out.is_empty(), "{piece}");
    }
}

#[test]
fn an_over_long_method_is_rejected_however_it_arrives() {
    // Found by `http1_split`: a 56-byte method split after 27 bytes was accepted, because the
    // method check only ran on short buffers; in one piece or byte by byte it was rejected.
    let req = format!("HEA{}D /x HTTP/1.1\r\n\r\n", "t".repeat(51));
    for cut in [1, 27, 33, 40, req.len()] {
        let mut conn = Http1Connection::default();
        let mut out = Vec::new();
        let seg = |b| Segment {
            head: b,
            gap: 0,
            tail: &[],
            enter_ns: 1,
            exit_ns: 2,
            tid: 3,
        };
        for p in req.as_bytes().chunks(cut) {
            conn.feed(Direction::Ingress, &seg(p), &mut out);
        }
        conn.on_close(5, &mut out);
        assert!(out.is_empty(), "{cut}");
        assert_eq!(
            conn.stats()
                .count(mop_protocol::http1::ParseError::UnexpectedBytes),
            1,
            "{cut}"
        );
    }
}
