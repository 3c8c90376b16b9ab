//! Chunked transfer coding: chunk-size lines, and spotting the end of a chunked body whose
//! framing was lost in uncaptured bytes.

use super::error::ParseError;

/// Where a chunked body's decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkPhase {
    /// Reading a chunk-size line (partial line in the stream's buffer).
    Size,
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After chunk data: `need` bytes of CRLF still expected (2 or 1).
    DataEnd { need: u8 },
    /// Reading trailer lines after the last chunk, until an empty line.
    Trailer,
}

/// Parses a chunk-size line without its line end: hex digits, optional whitespace, optional
/// `;` extensions (ignored).
pub(crate) fn parse_chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ParseError::InvalidChunkSize);
    }
    match line[digits..].iter().find(|&&b| b != b' ' && b != b'\t') {
        None | Some(b';') => {}
        Some(_) => return Err(ParseError::InvalidChunkSize),
    }
    line[..digits].iter().try_fold(0u64, |acc, &d| {
        let v = (d as char)
            .to_digit(16)
            .map(u64::from)
            .ok_or(ParseError::InvalidChunkSize)?;
        acc.checked_mul(16)
            .and_then(|a| a.checked_add(v))
            .ok_or(ParseError::InvalidChunkSize)
    })
}

/// The last captured bytes of a body whose chunk framing was lost, to notice its end.
///
/// Reset at every gap: only bytes contiguous with the end of the stream matter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EndWatch {
    win: [u8; Self::LEN],
    len: usize,
}

impl Default for EndWatch {
    fn default() -> Self {
        Self {
            win: [0; Self::LEN],
            len: 0,
        }
    }
}

impl EndWatch {
    const LEN: usize = 64;

    pub(crate) fn reset(&mut self) {
        self.len = 0;
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if data.len() >= Self::LEN {
            self.win.copy_from_slice(&data[data.len() - Self::LEN..]);
            self.len = Self::LEN;
            return;
        }
        let keep = (Self::LEN - data.len()).min(self.len);
        self.win.copy_within(self.len - keep..self.len, 0);
        self.win[keep..keep + data.len()].copy_from_slice(data);
        self.len = keep + data.len();
    }

    /// True when the bytes seen last end a chunked body: the last chunk (`0`, maybe with
    /// extensions) and an empty line, with trailer fields between them or not.
    pub(crate) fn ends_body(&self) -> bool {
        let w = &self.win[..self.len];
        if w == b"0\r\n\r\n" || w.ends_with(b"\n0\r\n\r\n") {
            return true;
        }
        if !w.ends_with(b"\r\n\r\n") {
            return false;
        }
        // Trailers: "\n0[;ext]\r\n" then "name: value\r\n" lines, then the empty line.
        let body = &w[..w.len() - 2];
        let mut lines = body.split(|&b| b == b'\n').rev().skip(1);
        for line in lines.by_ref() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line == b"0" || line.starts_with(b"0;") {
                return true;
            }
            let field = line.iter().position(|&b| b == b':').is_some_and(|c| c > 0);
            if !field {
                return false;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"0"), Ok(0));
        assert_eq!(parse_chunk_size(b"1a"), Ok(26));
        assert_eq!(parse_chunk_size(b"FF ; name=value"), Ok(255));
        assert_eq!(parse_chunk_size(b"10;ext"), Ok(16));
        assert_eq!(parse_chunk_size(b"000000000000000000000010"), Ok(16));
        assert_eq!(parse_chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b"0x10",
            b"g",
            b" 10",
            b"10 x",
            b"10000000000000000",
            b";",
        ] {
            assert_eq!(
                parse_chunk_size(bad),
                Err(ParseError::InvalidChunkSize),
                "{bad:?}"
            );
        }
    }

    fn watch(parts: &[&[u8]]) -> bool {
        let mut w = EndWatch::default();
        for p in parts {
            w.push(p);
        }
        w.ends_body()
    }

    #[test]
    fn end_watch() {
        assert!(watch(&[b"0\r\n\r\n"]));
        assert!(watch(&[b"abc\r\n0\r\n\r\n"]));
        assert!(watch(&[b"abc\r\n0\r", b"\n\r\n"]));
        assert!(watch(&[
            b"x\r\n0;ext=1\r\nExpires: never\r\nX-Sum: 12\r\n\r\n"
        ]));
        assert!(watch(&[b"x\r\n0\r\nA: b\r\n\r\n"]));
        assert!(!watch(&[b"abc\r\n10\r\n\r\n"]));
        assert!(!watch(&[b"line\r\n\r\n"]));
        assert!(!watch(&[b"x\r\nno colon\r\n\r\n"]));
        assert!(!watch(&[b"abc\r\n0\r\n"]));
        let mut long = vec![b'a'; 200];
        long.extend_from_slice(b"\r\n0\r\n\r\n");
        assert!(watch(&[&long]));
        let mut w = EndWatch::default();
        w.push(b"abc\r\n0\r\n");
        w.reset();
        w.push(b"\r\n");
        assert!(!w.ends_body());
    }
}
