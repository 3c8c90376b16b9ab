//! The HPACK Huffman code (RFC 7541 Appendix B) and its decoder.
//!
//! The code is canonical: sorted by length, then by symbol, each code is the previous one plus
//! one, shifted left by the growth in length. So a decoder needs only, per length, the first code
//! and where its symbols start in the sorted symbol list. Codes of at most 8 bits (the common
//! ASCII characters) are also looked up directly from the next 8 bits.

/// `(code, length in bits)` of each symbol; symbol 256 is EOS.
#[expect(clippy::unreadable_literal, reason = "the table as RFC 7541 Appendix B prints it")]
#[rustfmt::skip]
pub(crate) const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28),
    (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28), (0xfffffe8, 28), (0xffffea, 24),
    (0x3ffffffc, 30), (0xfffffe9, 28), (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28),
    (0xfffffec, 28), (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28), (0xffffff4, 28),
    (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28),
    (0xffffffa, 28), (0xffffffb, 28), (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), (0x3fa, 10), (0x3fb, 10), (0xf9, 8),
    (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6), (0x0, 5), (0x1, 5), (0x2, 5),
    (0x19, 6), (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6), (0x1e, 6), (0x1f, 6), (0x5c, 7),
    (0xfb, 8), (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), (0x1ffa, 13), (0x21, 6),
    (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7), (0x63, 7), (0x64, 7),
    (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7), (0x6b, 7), (0x6c, 7),
    (0x6d, 7), (0x6e, 7), (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xfc, 8), (0x73, 7),
    (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6), (0x7ffd, 15),
    (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5),
    (0x74, 7), (0x75, 7), (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5), (0x2b, 6), (0x76, 7),
    (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7), (0x79, 7), (0x7a, 7), (0x7b, 7),
    (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28), (0xfffe6, 20),
    (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20), (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22),
    (0x7fffd9, 23), (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23), (0x7fffdd, 23),
    (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23), (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22),
    (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23), (0x7fffe4, 23),
    (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23), (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23),
    (0xffffef, 24), (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22),
    (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21), (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22),
    (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23), (0x1fffe0, 21),
    (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21), (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23),
    (0x7fffef, 23), (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22), (0x7ffff0, 23),
    (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23), (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20),
    (0x7fff1, 19), (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25), (0x3ffffe2, 26),
    (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27), (0x7ffffdf, 27), (0x3ffffe5, 26),
    (0xfffff1, 24), (0x1ffffed, 25), (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26),
    (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28),
    (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27), (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20),
    (0x1fffe6, 21), (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23), (0x3fffea, 22),
    (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24), (0xfffff5, 24),
    (0x3ffffea, 26), (0x7ffff4, 23), (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26),
    (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27), (0x7ffffee, 27),
    (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26), (0x3fffffff, 30),
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// The decoding tables, built at compile time from [`CODES`].
struct Tables {
    /// Symbols sorted by (length, symbol).
    sorted: [u16; 257],
    /// Per length: the first canonical code of that length.
    first: [u32; MAX_LEN + 1],
    /// Per length: how many codes have it.
    count: [u32; MAX_LEN + 1],
    /// Per length: index in `sorted` of its first symbol.
    offset: [u32; MAX_LEN + 1],
    /// Per value of the next 8 bits: `(symbol, length)` when a code of at most 8 bits matches,
    /// else length 0.
    fast: [(u16, u8); 256],
}

const TABLES: Tables = build();

const fn build() -> Tables {
    let mut count = [0u32; MAX_LEN + 1];
    let mut i = 0;
    while i < 257 {
        count[CODES[i].1 as usize] += 1;
        i += 1;
    }
    let mut offset = [0u32; MAX_LEN + 1];
    let mut first = [0u32; MAX_LEN + 1];
    let mut len = 1;
    let mut code = 0u32;
    let mut at = 0u32;
    while len <= MAX_LEN {
        offset[len] = at;
        first[len] = code;
        at += count[len];
        code = (code + count[len]) << 1;
        len += 1;
    }
    let mut sorted = [0u16; 257];
    let mut filled = [0u32; MAX_LEN + 1];
    let mut sym = 0;
    while sym < 257 {
        let l = CODES[sym].1 as usize;
        sorted[(offset[l] + filled[l]) as usize] = sym as u16;
        filled[l] += 1;
        sym += 1;
    }
    let mut fast = [(0u16, 0u8); 256];
    let mut sym = 0;
    while sym < 257 {
        let (c, l) = CODES[sym];
        if l <= 8 {
            let shift = 8 - l;
            let base = (c << shift) as usize;
            let mut k = 0;
            while k < (1 << shift) {
                fast[base + k] = (sym as u16, l);
                k += 1;
            }
        }
        sym += 1;
    }
    Tables {
        sorted,
        first,
        count,
        offset,
        fast,
    }
}

/// Why a Huffman string does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HuffmanError {
    /// The EOS symbol inside the string.
    Eos,
    /// More than 7 bits of padding, or padding that is not the EOS prefix (all ones).
    Padding,
}

/// The symbol whose code starts the 32 bits `peek` (left-justified), with its length.
fn lookup(peek: u32) -> (u16, u32) {
    let t = &TABLES;
    let (sym, len) = t.fast[(peek >> 24) as usize];
    if len != 0 {
        return (sym, u32::from(len));
    }
    let mut l = 9;
    while l <= MAX_LEN {
        let code = u64::from(peek) >> (32 - l);
        let rel = code.wrapping_sub(u64::from(t.first[l]));
        if code >= u64::from(t.first[l]) && rel < u64::from(t.count[l]) {
            return (t.sorted[(t.offset[l] + rel as u32) as usize], l as u32);
        }
        l += 1;
    }
    // Unreachable for a complete code, but keep it total: all ones is EOS.
    (EOS, MAX_LEN as u32)
}

/// Decodes `src`, appending the symbols to `out`.
pub(crate) fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    out.reserve(src.len() + src.len() / 2);
    let mut acc: u64 = 0;
    let mut nbits: u32 = 0;
    let mut input = src.iter();
    loop {
        while nbits <= 56 {
            match input.next() {
                Some(&b) => {
                    acc = (acc << 8) | u64::from(b);
                    nbits += 8;
                }
                None => break,
            }
        }
        if nbits == 0 {
            return Ok(());
        }
        // The next 32 bits, padded with ones past the end of the input.
        let peek = if nbits >= 32 {
            (acc >> (nbits - 32)) as u32
        } else {
            ((acc << (32 - nbits)) as u32) | (u32::MAX >> nbits)
        };
        let (sym, len) = lookup(peek);
        if len > nbits {
            // Only padding is left: fewer than 8 bits, all ones.
            let mask = (1u64 << nbits) - 1;
            return if nbits <= 7 && acc & mask == mask {
                Ok(())
            } else {
                Err(HuffmanError::Padding)
            };
        }
        if sym == EOS {
            return Err(HuffmanError::Eos);
        }
        out.push(sym as u8);
        nbits -= len;
        acc &= (1u64 << nbits) - 1;
    }
}

/// Huffman-encodes `src` (for tests and benchmarks).
#[cfg(test)]
pub(crate) fn encode(src: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut nbits = 0u32;
    for &b in src {
        let (code, len) = CODES[b as usize];
        acc = (acc << len) | u64::from(code);
        nbits += u32::from(len);
        while nbits >= 8 {
            out.push((acc >> (nbits - 8)) as u8);
            nbits -= 8;
        }
        acc &= (1u64 << nbits) - 1;
    }
    if nbits > 0 {
        out.push(((acc << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    #[test]
    fn every_symbol_alone_and_in_sequence() {
        let mut all = Vec::new();
        for s in 0..=255u8 {
            let mut enc = Vec::new();
            encode(&[s], &mut enc);
            assert_eq!(dec(&enc), Ok(vec![s]), "symbol {s}");
            // Check the encoder against the table: the code, then ones.
            let (code, len) = CODES[s as usize];
            let bits = enc.len() as u32 * 8;
            let want = (u64::from(code) << (bits - u32::from(len)))
                | ((1u64 << (bits - u32::from(len))) - 1);
            let got = enc.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
            assert_eq!(got, want, "symbol {s}");
            all.push(s);
        }
        for rot in [0usize, 1, 7, 100] {
            let mut src = all.clone();
            src.rotate_left(rot);
            let mut enc = Vec::new();
            encode(&src, &mut enc);
            assert_eq!(dec(&enc).unwrap(), src);
        }
    }

    #[test]
    fn rfc_examples() {
        // RFC 7541 C.4.1 and C.6.1.
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(dec(&www).unwrap(), b"www.example.com");
        let date = [
            0xd0, 0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04, 0x0b,
            0x81, 0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff,
        ];
        assert_eq!(dec(&date).unwrap(), b"Mon, 21 Oct 2013 20:13:21 GMT");
        assert_eq!(dec(&[]).unwrap(), b"");
    }

    #[test]
    fn bad_padding_and_eos() {
        // 8 bits of ones: padding longer than 7 bits.
        assert_eq!(dec(&[0xff]), Err(HuffmanError::Padding));
        // '0' (00000) padded with zeros.
        assert_eq!(dec(&[0x00]), Err(HuffmanError::Padding));
        // EOS (30 ones) followed by '0' padded: EOS in the string.
        assert_eq!(dec(&[0xff, 0xff, 0xff, 0xfc, 0x1f]), Err(HuffmanError::Eos));
        // A full EOS at the end is padding over 7 bits or EOS: either way an error.
        assert!(dec(&[0xff, 0xff, 0xff, 0xff]).is_err());
        // 'a' (00011) + 3 bits of ones: fine; + 0 bits in the middle: still fine.
        assert_eq!(dec(&[0x1f]).unwrap(), b"a");
    }

    #[test]
    fn fuzz_like_inputs_never_panic() {
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let n = (x % 40) as usize;
            let mut src = Vec::with_capacity(n);
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                src.push(x as u8);
            }
            let _ = dec(&src);
        }
    }
}
