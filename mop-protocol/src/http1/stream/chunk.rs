//! Decoding a chunked body: chunk-size lines, chunk data, the CRLF after it, trailers.

use std::mem;

use super::{Ctx, Phase, Stream};
use crate::exchange::HttpExchange;
use crate::http1::chunked::{ChunkPhase, parse_chunk_size};
use crate::http1::connection::Shared;
use crate::http1::error::ParseError;

impl Stream {
    pub(super) fn chunk<'d>(
        &mut self,
        cx: &Ctx,
        c: ChunkPhase,
        data: &'d [u8],
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
    ) -> &'d [u8] {
        match c {
            ChunkPhase::Data { .. } => {
                let n = self.consume_known(sh, cx, out, data.len() as u64);
                &data[n as usize..]
            }
            ChunkPhase::DataEnd { need } => {
                self.touch(sh, cx);
                match (need, data[0]) {
                    (2, b'\r') => self.phase = Phase::Chunk(ChunkPhase::DataEnd { need: 1 }),
                    (_, b'\n') => self.phase = Phase::Chunk(ChunkPhase::Size),
                    _ => {
                        sh.stats.record(ParseError::InvalidChunkFraming);
                        self.absorb(sh, cx, true, None);
                        return data;
                    }
                }
                &data[1..]
            }
            ChunkPhase::Size | ChunkPhase::Trailer => {
                self.touch(sh, cx);
                let nl = data.iter().position(|&b| b == b'\n');
                let next = nl.map_or(data.len(), |i| i + 1);
                if nl.is_none() || !self.buf.is_empty() {
                    if self.buf.len() + next > sh.limits.max_head_bytes {
                        sh.stats.record(ParseError::ChunkLineTooLong);
                        self.buf.clear();
                        self.absorb(sh, cx, true, None);
                        return data;
                    }
                    self.buf.extend_from_slice(&data[..next]);
                    if nl.is_none() {
                        return &[];
                    }
                }
                let buf = mem::take(&mut self.buf);
                let line = if buf.is_empty() {
                    &data[..next]
                } else {
                    &buf[..]
                };
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.chunk_line(cx, c, line, sh, out);
                self.buf = buf;
                self.buf.clear();
                &data[next..]
            }
        }
    }

    pub(super) fn chunk_line(
        &mut self,
        cx: &Ctx,
        c: ChunkPhase,
        line: &[u8],
        sh: &mut Shared,
        out: &mut Vec<HttpExchange>,
    ) {
        if c == ChunkPhase::Trailer {
            // Trailer fields are not kept; the empty line ends the message.
            if line.is_empty() {
                self.finish(sh, out);
            }
            return;
        }
        match parse_chunk_size(line) {
            Ok(0) => self.phase = Phase::Chunk(ChunkPhase::Trailer),
            Ok(n) => self.phase = Phase::Chunk(ChunkPhase::Data { remaining: n }),
            Err(e) => {
                sh.stats.record(e);
                self.absorb(sh, cx, true, None);
            }
        }
    }
}
