//! RFC 7541 Appendix C, byte for byte, fed whole and split everywhere; malformed input; lost
//! context.

use super::*;

type Fields = Vec<(Option<String>, Option<String>)>;

#[derive(Default)]
struct Collect {
    fields: Fields,
    errors: Vec<HpackError>,
    wanted: Option<&'static [&'static str]>,
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl FieldSink for Collect {
    fn wants_value(&mut self, name: &[u8]) -> bool {
        self.wanted
            .is_none_or(|w| w.iter().any(|n| n.as_bytes() == name))
    }
    fn field(&mut self, name: Option<&[u8]>, value: Option<&[u8]>) {
        self.fields.push((name.map(s), value.map(s)));
    }
    fn error(&mut self, e: HpackError) {
        self.errors.push(e);
    }
}

fn hex(h: &str) -> Vec<u8> {
    let h: Vec<u8> = h.bytes().filter(u8::is_ascii_hexdigit).collect();
    h.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

fn known(list: &[(&str, &str)]) -> Fields {
    list.iter()
        .map(|(n, v)| (Some((*n).to_owned()), Some((*v).to_owned())))
        .collect()
}

/// The dynamic table, newest first, and its size.
fn table(d: &Decoder) -> (Vec<(String, String)>, usize) {
    let entries = (1..=d.table_len())
        .map(|i| {
            let (n, v) = d.dynamic_entry(i).unwrap();
            (s(n), s(v))
        })
        .collect();
    (entries, d.table_size())
}

fn entries(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// One step of an Appendix C story: a block, the fields it decodes to, the table after it.
struct Step<'a> {
    block: &'a str,
    fields: &'a [(&'a str, &'a str)],
    table: &'a [(&'a str, &'a str)],
    size: usize,
}

/// Replays `steps` through one decoder, with each block fed whole, then byte by byte, then in
/// every 2-way split (a fresh decoder per way, replaying the earlier blocks whole).
fn story(max: Option<usize>, steps: &[Step<'_>]) {
    let fresh = || {
        let mut d = Decoder::new(65536, 65536);
        if let Some(m) = max {
            d.settings_acked(m);
        }
        d
    };
    let check = |d: &Decoder, c: &Collect, st: &Step<'_>, how: &str| {
        assert_eq!(c.fields, known(st.fields), "{how}: {}", st.block);
        assert!(c.errors.is_empty(), "{how}: {:?}", c.errors);
        assert_eq!(
            table(d),
            (entries(st.table), st.size),
            "{how}: {}",
            st.block
        );
        assert!(d.is_exact());
    };
    let mut whole = fresh();
    for (k, st) in steps.iter().enumerate() {
        let block = hex(st.block);
        let mut c = Collect::default();
        whole.decode_block(&block, &mut c);
        check(&whole, &c, st, "whole");

        let mut bytes = fresh();
        let mut splits: Vec<Decoder> = (0..=block.len()).map(|_| fresh()).collect();
        for earlier in &steps[..k] {
            let b = hex(earlier.block);
            bytes.decode_block(&b, &mut Collect::default());
            for d in &mut splits {
                d.decode_block(&b, &mut Collect::default());
            }
        }
        let mut c = Collect::default();
        for b in &block {
            bytes.fragment(std::slice::from_ref(b), &mut c);
        }
        bytes.end_block(&mut c);
        check(&bytes, &c, st, "byte by byte");
        for (at, d) in splits.iter_mut().enumerate() {
            let mut c = Collect::default();
            d.fragment(&block[..at], &mut c);
            d.fragment(&block[at..], &mut c);
            d.end_block(&mut c);
            check(d, &c, st, &format!("split at {at}"));
        }
    }
}

#[test]
fn c2_field_representations() {
    // C.2.1 literal with indexing.
    story(
        None,
        &[Step {
            block: "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            fields: &[("custom-key", "custom-header")],
            table: &[("custom-key", "custom-header")],
            size: 55,
        }],
    );
    // C.2.2 literal without indexing, C.2.3 never indexed, C.2.4 indexed: table stays empty.
    for (block, f) in [
        (
            "040c 2f73 616d 706c 652f 7061 7468",
            (":path", "/sample/path"),
        ),
        (
            "1008 7061 7373 776f 7264 0673 6563 7265 74",
            ("password", "secret"),
        ),
        ("82", (":method", "GET")),
    ] {
        story(
            None,
            &[Step {
                block,
                fields: &[f],
                table: &[],
                size: 0,
            }],
        );
    }
}

const C3_FIELDS_1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const C3_FIELDS_2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const C3_FIELDS_3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];
const C3_TABLE_1: &[(&str, &str)] = &[(":authority", "www.example.com")];
const C3_TABLE_2: &[(&str, &str)] = &[
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];
const C3_TABLE_3: &[(&str, &str)] = &[
    ("custom-key", "custom-value"),
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];

fn requests(blocks: [&str; 3]) {
    story(
        None,
        &[
            Step {
                block: blocks[0],
                fields: C3_FIELDS_1,
                table: C3_TABLE_1,
                size: 57,
            },
            Step {
                block: blocks[1],
                fields: C3_FIELDS_2,
                table: C3_TABLE_2,
                size: 110,
            },
            Step {
                block: blocks[2],
                fields: C3_FIELDS_3,
                table: C3_TABLE_3,
                size: 164,
            },
        ],
    );
}

#[test]
fn c3_requests_without_huffman() {
    requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c4_requests_with_huffman() {
    requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

const C5_FIELDS_1: &[(&str, &str)] = &[
    (":status", "302"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const C5_FIELDS_2: &[(&str, &str)] = &[
    (":status", "307"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const C5_FIELDS_3: &[(&str, &str)] = &[
    (":status", "200"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ("location", "https://www.example.com"),
    ("content-encoding", "gzip"),
    (
        "set-cookie",
        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ),
];
const C5_TABLE_1: &[(&str, &str)] = &[
    ("location", "https://www.example.com"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("cache-control", "private"),
    (":status", "302"),
];
const C5_TABLE_2: &[(&str, &str)] = &[
    (":status", "307"),
    ("location", "https://www.example.com"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("cache-control", "private"),
];
const C5_TABLE_3: &[(&str, &str)] = &[
    (
        "set-cookie",
        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ),
    ("content-encoding", "gzip"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
];

fn responses(blocks: [&str; 3]) {
    story(
        Some(256),
        &[
            Step {
                block: blocks[0],
                fields: C5_FIELDS_1,
                table: C5_TABLE_1,
                size: 222,
            },
            Step {
                block: blocks[1],
                fields: C5_FIELDS_2,
                table: C5_TABLE_2,
                size: 222,
            },
            Step {
                block: blocks[2],
                fields: C5_FIELDS_3,
                table: C5_TABLE_3,
                size: 215,
            },
        ],
    );
}

#[test]
fn c5_responses_without_huffman_evict() {
    responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ]);
}

#[test]
fn c6_responses_with_huffman_evict() {
    responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn integers_c1_and_limits() {
    assert!(matches!(integer(&[0x0a], 5), Ok((10, 1))));
    assert!(matches!(integer(&[0x1f, 0x9a, 0x0a], 5), Ok((1337, 3))));
    assert!(matches!(integer(&[0x2a], 8), Ok((42, 1))));
    assert!(matches!(integer(&[0x1f, 0x9a], 5), Err(Stop::Incomplete)));
    assert!(matches!(integer(&[], 5), Err(Stop::Incomplete)));
    // u32::MAX fits; one more does not.
    assert!(matches!(
        integer(&[0x1f, 0xe0, 0xff, 0xff, 0xff, 0x0f], 5),
        Ok((0xffff_ffff, 6))
    ));
    assert!(matches!(
        integer(&[0x1f, 0xe1, 0xff, 0xff, 0xff, 0x0f], 5),
        Err(Stop::Fatal(HpackError::InvalidInteger))
    ));
    // Overlong: zero continuation bytes past five.
    assert!(matches!(
        integer(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 5),
        Err(Stop::Fatal(HpackError::InvalidInteger))
    ));
}

fn decode(d: &mut Decoder, h: &str) -> Collect {
    let mut c = Collect::default();
    d.decode_block(&hex(h), &mut c);
    c
}

#[test]
fn malformed_blocks() {
    // Index 0: an error, the field unknown, decoding goes on.
    let mut d = Decoder::new(65536, 65536);
    let c = decode(&mut d, "80 82");
    assert_eq!(c.errors, [HpackError::InvalidIndex]);
    assert_eq!(c.fields[0], (None, None));
    assert_eq!(c.fields[1].1.as_deref(), Some("GET"));
    // A dynamic index past an exact table.
    let c = decode(&mut d, "be 82");
    assert_eq!(c.errors, [HpackError::InvalidIndex]);
    assert_eq!(c.fields.len(), 2);
    // An integer overflow ends the block.
    let c = decode(&mut d, "82 ff ff ff ff ff ff 0f 82");
    assert_eq!(c.errors, [HpackError::InvalidInteger]);
    assert_eq!(c.fields.len(), 1);
    assert!(!d.is_exact());
    // Bad Huffman in a value: unknown value, the name still known, decoding goes on.
    let mut d = Decoder::new(65536, 65536);
    let c = decode(&mut d, "04 81 ff 82");
    assert_eq!(c.errors, [HpackError::InvalidHuffman]);
    assert_eq!(c.fields[0], (Some(":path".into()), None));
    assert_eq!(c.fields[1].1.as_deref(), Some("GET"));
    // Bad Huffman in an indexed literal: an unknown entry takes the slot.
    let c = decode(&mut d, "44 81 ff 40 01 61 01 62 be bf");
    assert_eq!(c.errors, [HpackError::InvalidHuffman]);
    assert_eq!(c.fields[2], (Some("a".into()), Some("b".into())));
    assert_eq!(c.fields[3], (None, None));
    assert_eq!(d.table_len(), 2);
    // A block ending inside an instruction.
    let mut d = Decoder::new(65536, 65536);
    let c = decode(&mut d, "82 40 05 61");
    assert_eq!(c.errors, [HpackError::Truncated]);
    assert_eq!(c.fields.len(), 1);
    assert!(!d.is_exact());
    // A string longer than the pending limit.
    let mut d = Decoder::new(65536, 16);
    let c = decode(
        &mut d,
        "82 04 20 4141414141414141414141414141414141414141414141414141414141414141 82",
    );
    assert_eq!(c.errors, [HpackError::Oversize]);
    assert_eq!(c.fields.len(), 1);
    // Size updates: after a field, over the announced limit, over the cap.
    let mut d = Decoder::new(8192, 65536);
    let c = decode(&mut d, "82 3f e1 1f");
    assert_eq!(c.errors, [HpackError::InvalidSizeUpdate]);
    let c = decode(&mut d, "3f e2 3f");
    assert_eq!(
        c.errors,
        [HpackError::InvalidSizeUpdate, HpackError::TableOverCap]
    );
    assert_eq!(d.table_max_size(), 8192);
    d.settings_announced(10_000);
    let c = decode(&mut d, "3f e2 3f");
    assert_eq!(c.errors, [HpackError::TableOverCap]);
}

#[test]
fn size_update_evicts_and_zero_restores_exactness() {
    let mut d = Decoder::new(65536, 65536);
    decode(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    );
    assert_eq!(d.table_len(), 1);
    let c = decode(&mut d, "20 3f e1 1f be");
    assert!(c.errors.contains(&HpackError::InvalidIndex));
    assert_eq!(d.table_len(), 0);
    assert_eq!(d.table_max_size(), 4096);
    d.lost();
    d.end_block(&mut Collect::default());
    assert!(!d.is_exact());
    decode(&mut d, "20");
    assert!(d.is_exact());
}

#[test]
fn lost_block_forgets_and_new_insertions_are_trusted() {
    let mut d = Decoder::new(65536, 65536);
    // Two requests insert :authority and custom-key.
    decode(&mut d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
    decode(
        &mut d,
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    );
    assert_eq!(d.table_len(), 2);
    // A block starts, inserts `a: b`, and is then cut by uncaptured bytes.
    let mut c = Collect::default();
    d.fragment(&hex("82 40 01 61 01 62 40 01"), &mut c);
    d.lost();
    d.fragment(&hex("63 01 64"), &mut c); // the rest is skipped
    d.end_block(&mut c);
    assert_eq!(c.fields.len(), 2, "the part before the gap is decoded");
    assert_eq!(d.table_len(), 0);
    assert!(!d.is_exact());
    // The encoder now refers to entries the parser lost: unknown, never wrong, no error.
    let c = decode(&mut d, "82 be bf c0 c1 40 01 78 01 79 be bf");
    assert!(c.errors.is_empty());
    assert_eq!(
        c.fields[1..5],
        [(None, None), (None, None), (None, None), (None, None)]
    );
    assert_eq!(c.fields[5], (Some("x".into()), Some("y".into())));
    assert_eq!(c.fields[6], (Some("x".into()), Some("y".into())));
    assert_eq!(c.fields[7], (None, None));
    // A literal naming an unknown entry inserts an unknown entry.
    let c = decode(&mut d, "7f 01 01 7a be bf");
    assert_eq!(c.fields[0], (None, Some("z".into())));
    assert_eq!(c.fields[1], (None, None));
    assert_eq!(c.fields[2], (Some("x".into()), Some("y".into())));
}

#[test]
fn joined_decoder_starts_unknown() {
    let mut d = Decoder::joined(65536, 65536);
    let c = decode(&mut d, "82 be 44 01 2f");
    assert!(c.errors.is_empty());
    assert_eq!(c.fields[1], (None, None));
    assert_eq!(c.fields[2], (Some(":path".into()), Some("/".into())));
    let c = decode(&mut d, "be");
    assert_eq!(c.fields[0], (Some(":path".into()), Some("/".into())));
}

#[test]
fn unwanted_values_are_not_decoded() {
    let mut d = Decoder::new(65536, 65536);
    let mut c = Collect {
        wanted: Some(&[":path"]),
        ..Collect::default()
    };
    // Not indexed: user-agent's value (bad Huffman even) is skipped; :path decoded.
    d.decode_block(&hex("0f 2b 81 ff 04 01 2f"), &mut c);
    assert!(c.errors.is_empty());
    assert_eq!(c.fields[0], (Some("user-agent".into()), None));
    assert_eq!(c.fields[1], (Some(":path".into()), Some("/".into())));
    // Indexed literals are always decoded, for the table.
    d.decode_block(&hex("7a 01 41"), &mut c);
    assert_eq!(d.dynamic_entry(1), Some((&b"user-agent"[..], &b"A"[..])));
}

#[test]
fn name_from_an_entry_the_insertion_evicts() {
    // Table of 64: one entry `custom-key: x` (43), then a literal with indexing naming it (62)
    // whose insertion evicts it.
    let mut d = Decoder::new(65536, 65536);
    d.settings_acked(64);
    decode(&mut d, "40 0a 637573746f6d2d6b6579 01 78");
    let c = decode(&mut d, "7e 01 79");
    assert_eq!(c.fields[0], (Some("custom-key".into()), Some("y".into())));
    assert_eq!(d.dynamic_entry(1), Some((&b"custom-key"[..], &b"y"[..])));
    assert_eq!(d.table_len(), 1);
}

#[test]
fn random_blocks_never_panic_and_stay_bounded() {
    let mut x = 0x9e37_79b9u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut d = Decoder::new(4096, 1024);
    for _ in 0..3000 {
        let n = (next() % 64) as usize;
        let block: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        let mut c = Collect::default();
        let cut = (next() as usize) % (n + 1);
        d.fragment(&block[..cut], &mut c);
        if next() % 8 == 0 {
            d.lost();
        }
        d.fragment(&block[cut..], &mut c);
        d.end_block(&mut c);
        assert!(d.table_size() <= 4096);
        assert!(d.heap_bytes() < 64 * 1024, "{}", d.heap_bytes());
    }
}
