//! HPACK (RFC 7541): the header-block decoder of one direction of an HTTP/2 connection.
//!
//! [`Decoder`] is fed the fragments of each header block as they arrive (the payloads of a
//! HEADERS or `PUSH_PROMISE` frame and its CONTINUATION frames, split anywhere) and decodes every
//! instruction as soon as its last byte is there, keeping only the bytes of one incomplete
//! instruction, at most [`Decoder::max_pending`]. Every field is reported to a [`FieldSink`],
//! which says which values it wants decoded; every field is processed, so the dynamic table stays
//! right. Nothing is allocated per field: Huffman strings decode into two reused buffers, and
//! the dynamic table keeps its entries, oldest first, in one byte buffer that drops evicted
//! bytes when they are half of it.
//!
//! # Lost context
//!
//! A passive parser may miss part of a header block (uncaptured bytes), join a connection
//! late, or meet a table larger than it will keep. It never reports a wrong value for that:
//!
//! - Static-table references and literals carry their own bytes and are always known.
//! - Dynamic index `i` means the `i`-th most recent insertion the encoder still holds. The
//!   decoder counts every insertion it decodes. When part of a block is lost
//!   ([`Decoder::lost`]), an unknown number of insertions may have happened, so it forgets every
//!   entry; the entries it inserts after that are the newest ones on both sides, so an index up
//!   to the number of entries it holds is known, and any other index is unknown. Eviction sizes
//!   do not matter for this: both tables hold a suffix of the same insertions.
//! - A literal whose name or value is unknown (a name from an unknown entry, bad Huffman) still
//!   counts as an insertion, of an entry whose content is unknown.
//! - A table size update over the cap keeps the table at the cap: entries the encoder still has
//!   but the decoder evicted become unknown indices.
//!
//! While nothing was lost the table is *exact*, and an index past its end is a protocol error
//! ([`HpackError::InvalidIndex`]); otherwise it is only unknown.

mod huffman;
mod table;
#[cfg(test)]
mod tests;

pub(crate) use table::DEFAULT_MAX_SIZE;
use table::{DynamicTable, ENTRY_OVERHEAD, Lookup, STATIC};

/// A problem in a header block. The decoder reports it to [`FieldSink::error`] and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HpackError {
    /// Index 0, or a dynamic index past the table while the table is exact. The field is
    /// unknown; decoding goes on.
    InvalidIndex,
    /// An integer over 32 bits. The rest of the block cannot be decoded.
    InvalidInteger,
    /// A Huffman string with EOS or bad padding. The string is unknown; decoding goes on.
    InvalidHuffman,
    /// A dynamic table size update after the first field, or over the limit the decoder's side
    /// announced. It is applied anyway.
    InvalidSizeUpdate,
    /// A dynamic table size update over the decoder's cap: the table is kept at the cap and is
    /// no longer exact.
    TableOverCap,
    /// One instruction longer than [`Decoder::max_pending`]. The rest of the block is skipped.
    Oversize,
    /// The block ended inside an instruction.
    Truncated,
}

/// Receives the fields of a header block, in order.
pub trait FieldSink {
    /// Whether the value of a field named `name` is wanted. Values that are not wanted are not
    /// Huffman-decoded (unless the dynamic table needs them) and reach
    /// [`FieldSink::field`] as `None`.
    fn wants_value(&mut self, name: &[u8]) -> bool {
        let _ = name;
        true
    }

    /// One field. `None` means unknown (see the module docs), or for a value, not wanted.
    fn field(&mut self, name: Option<&[u8]>, value: Option<&[u8]>);

    /// A problem in the block.
    fn error(&mut self, error: HpackError) {
        let _ = error;
    }
}

/// Why one instruction could not be decoded.
enum Stop {
    /// Its bytes are not all there yet.
    Incomplete,
    /// The rest of the block cannot be decoded.
    Fatal(HpackError),
}

/// The HPACK decoder of one direction.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// Bytes of the current block's incomplete instruction.
    pending: Vec<u8>,
    max_pending: usize,
    /// No field decoded yet in the current block (size updates allowed).
    at_start: bool,
    /// The current block cannot be decoded further; its remaining fragments are skipped.
    failed: bool,
    /// The largest `SETTINGS_HEADER_TABLE_SIZE` the decoder's side announced, when known.
    settings_limit: Option<usize>,
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl Decoder {
    /// A decoder for a connection seen from its start: an empty, exact table.
    ///
    /// `max_table_size` caps the dynamic table whatever the encoder announces; `max_pending`
    /// bounds the bytes of one instruction.
    pub fn new(max_table_size: usize, max_pending: usize) -> Self {
        Self::with_table(
            DynamicTable::new(max_table_size, true),
            max_pending,
            Some(DEFAULT_MAX_SIZE),
        )
    }

    /// A decoder for a connection joined after its start: the table's entries are unknown.
    pub fn joined(max_table_size: usize, max_pending: usize) -> Self {
        Self::with_table(DynamicTable::new(max_table_size, false), max_pending, None)
    }

    fn with_table(table: DynamicTable, max_pending: usize, settings_limit: Option<usize>) -> Self {
        Self {
            table,
            pending: Vec::new(),
            max_pending,
            at_start: true,
            failed: false,
            settings_limit,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Largest instruction the decoder buffers.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Entries in the dynamic table (known or not).
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Size of the dynamic table as RFC 7541 counts it (a lower bound when not exact).
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// The dynamic table's maximum size in force.
    pub fn table_max_size(&self) -> usize {
        self.table.max_size()
    }

    /// Insertions decoded so far.
    pub fn inserted(&self) -> u64 {
        self.table.inserted()
    }

    /// True while the dynamic table is known to be the encoder's.
    pub fn is_exact(&self) -> bool {
        self.table.is_exact()
    }

    /// The dynamic entry at 1-based dynamic index `i` (HPACK index `i + 61`), when known.
    pub fn dynamic_entry(&self, i: usize) -> Option<(&[u8], &[u8])> {
        match self.table.get(i) {
            Lookup::Known(n, v) => Some((n, v)),
            _ => None,
        }
    }

    /// Heap bytes held (table, buffers).
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
            + self.pending.capacity()
            + self.name_buf.capacity()
            + self.value_buf.capacity()
    }

    /// The decoder's side announced `SETTINGS_HEADER_TABLE_SIZE = limit` (seen, not yet acked).
    pub fn settings_announced(&mut self, limit: usize) {
        if let Some(l) = &mut self.settings_limit {
            *l = (*l).max(limit);
        }
    }

    /// The encoder acknowledged `SETTINGS_HEADER_TABLE_SIZE = limit`: entries over a lower limit
    /// are evicted now, as the size update that must follow would.
    pub fn settings_acked(&mut self, limit: usize) {
        self.table.shrink_to(limit);
    }

    /// Decodes one complete header block.
    pub fn decode_block(&mut self, block: &[u8], sink: &mut impl FieldSink) {
        self.fragment(block, sink);
        self.end_block(sink);
    }

    /// The next bytes of the current header block.
    pub fn fragment(&mut self, mut bytes: &[u8], sink: &mut impl FieldSink) {
        while !self.failed && !bytes.is_empty() {
            if self.pending.is_empty() {
                // Decode straight from the input; keep only an incomplete last instruction
                // (at most `max_pending` bytes, or `run` failed the block).
                let used = self.run(bytes, sink);
                if !self.failed {
                    self.pending.extend_from_slice(&bytes[used..]);
                }
                return;
            }
            // Complete the pending instruction, never holding more than `max_pending + 1`.
            let take = (self.max_pending + 1)
                .saturating_sub(self.pending.len())
                .clamp(1, bytes.len());
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let used = self.run(&pending, sink);
            pending.drain(..used);
            if self.failed {
                pending.clear();
            }
            self.pending = pending;
        }
    }

    /// Bytes of the current block were not captured: the rest of the block is skipped and the
    /// dynamic table forgotten.
    pub fn lost(&mut self) {
        self.pending.clear();
        self.failed = true;
        self.table.forget();
    }

    /// True when the current block could not be decoded to its end (lost, or a fatal error).
    pub fn block_failed(&self) -> bool {
        self.failed
    }

    /// The current block ended (`END_HEADERS`).
    pub fn end_block(&mut self, sink: &mut impl FieldSink) {
        if !self.failed && !self.pending.is_empty() {
            sink.error(HpackError::Truncated);
            self.table.forget();
        }
        self.pending.clear();
        if self.pending.capacity() > 4096 {
            self.pending.shrink_to(4096);
        }
        self.at_start = true;
        self.failed = false;
    }

    /// Decodes the complete instructions at the start of `buf`; returns the bytes used.
    fn run(&mut self, buf: &[u8], sink: &mut impl FieldSink) -> usize {
        let mut at = 0;
        while at < buf.len() {
            match self.instruction(&buf[at..], sink) {
                Ok(n) => at += n,
                Err(Stop::Incomplete) => {
                    // An incomplete instruction is never longer than `max_pending` plus an
                    // integer: its strings' lengths are checked as soon as they are read, the
                    // same way whatever the split. This only guards memory.
                    if buf.len() - at > self.max_pending + 64 {
                        self.fatal(HpackError::Oversize, sink);
                    }
                    break;
                }
                Err(Stop::Fatal(e)) => {
                    self.fatal(e, sink);
                    break;
                }
            }
        }
        at
    }

    fn fatal(&mut self, e: HpackError, sink: &mut impl FieldSink) {
        sink.error(e);
        self.lost();
    }

    /// Decodes one instruction from the start of `buf`; returns its length.
    fn instruction(&mut self, buf: &[u8], sink: &mut impl FieldSink) -> Result<usize, Stop> {
        let b = buf[0];
        if b & 0x80 != 0 {
            let (index, n) = integer(buf, 7)?;
            self.at_start = false;
            match self.lookup(index) {
                Lookup::Known(name, value) => sink.field(Some(name), Some(value)),
                Lookup::Unknown => sink.field(None, None),
                Lookup::Invalid => {
                    sink.error(HpackError::InvalidIndex);
                    sink.field(None, None);
                }
            }
            return Ok(n);
        }
        if b & 0xe0 == 0x20 {
            let (size, n) = integer(buf, 5)?;
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if !self.at_start || self.settings_limit.is_some_and(|l| size > l) {
                sink.error(HpackError::InvalidSizeUpdate);
            }
            if !self.table.set_max_size(size) {
                sink.error(HpackError::TableOverCap);
            }
            return Ok(n);
        }
        let (indexing, prefix) = if b & 0xc0 == 0x40 {
            (true, 6)
        } else {
            (false, 4)
        };
        self.literal(buf, indexing, prefix, sink)
    }

    fn lookup(&self, index: u64) -> Lookup<'_> {
        lookup(&self.table, index)
    }

    /// A literal field, with or without indexing.
    fn literal(
        &mut self,
        buf: &[u8],
        indexing: bool,
        prefix: u32,
        sink: &mut impl FieldSink,
    ) -> Result<usize, Stop> {
        let (index, mut at) = integer(buf, prefix)?;
        // Parse both string headers before touching any state: the instruction may be
        // incomplete.
        let name_str = if index == 0 {
            let s = string(&buf[at..], at, self.max_pending)?;
            at = s.end;
            Some(s)
        } else {
            None
        };
        let value_str = string(&buf[at..], at, self.max_pending)?;
        at = value_str.end;
        if at > self.max_pending {
            // Whether the whole instruction is at hand or not: the same outcome for any split.
            return Err(Stop::Fatal(HpackError::Oversize));
        }
        self.at_start = false;

        let mut errors = [None, None];
        // Where the name's bytes are; `exact` is false when its length is unknown.
        let (name_src, name_len_exact) = match &name_str {
            Some(s) if s.huffman => {
                self.name_buf.clear();
                if huffman::decode(&buf[s.start..s.end], &mut self.name_buf).is_ok() {
                    (Src::NameBuf, true)
                } else {
                    errors[0] = Some(HpackError::InvalidHuffman);
                    (Src::Unknown, false)
                }
            }
            Some(s) => (Src::Input(s.start, s.end), true),
            None if (1..=STATIC.len() as u64).contains(&index) => {
                (Src::Static(STATIC[index as usize - 1].0), true)
            }
            None => match lookup(&self.table, index) {
                Lookup::Known(n, _) if indexing => {
                    // The insertion may evict the entry the name comes from: copy it.
                    self.name_buf.clear();
                    self.name_buf.extend_from_slice(n);
                    (Src::NameBuf, true)
                }
                Lookup::Known(..) => (Src::Table(index as usize - STATIC.len()), true),
                Lookup::Unknown => (Src::Unknown, false),
                Lookup::Invalid => {
                    errors[0] = Some(HpackError::InvalidIndex);
                    (Src::Unknown, false)
                }
            },
        };
        let want = indexing || {
            let name = resolve(name_src, buf, &self.name_buf, &self.table);
            name.is_some_and(|n| sink.wants_value(n))
        };
        let raw_value = &buf[value_str.start..value_str.end];
        let value_src = if !want {
            Src::Unknown
        } else if value_str.huffman {
            self.value_buf.clear();
            if huffman::decode(raw_value, &mut self.value_buf).is_ok() {
                Src::ValueBuf
            } else {
                errors[1] = Some(HpackError::InvalidHuffman);
                Src::Unknown
            }
        } else {
            Src::Input(value_str.start, value_str.end)
        };
        for e in errors.into_iter().flatten() {
            sink.error(e);
        }
        let name = resolve(name_src, buf, &self.name_buf, &self.table);
        let value = resolve(value_src, buf, &self.value_buf, &self.table);
        sink.field(name, value);
        if indexing {
            let name_len = name.map_or_else(
                || name_str.as_ref().map_or(0, StrHeader::min_decoded_len),
                <[u8]>::len,
            );
            let value_len = value.map_or_else(|| value_str.min_decoded_len(), <[u8]>::len);
            let known = name.is_some() && value.is_some();
            if known {
                // Neither borrows the table: a name from it was copied to `name_buf` above.
                let name = match name_src {
                    Src::Static(n) => n,
                    Src::Input(s, e) => &buf[s..e],
                    _ => &self.name_buf[..],
                };
                let value = match value_src {
                    Src::Input(s, e) => &buf[s..e],
                    _ => &self.value_buf[..],
                };
                self.table.insert(name, value);
            } else {
                let exact = name_len_exact && (value.is_some() || !value_str.huffman);
                self.table
                    .insert_unknown(name_len + value_len + ENTRY_OVERHEAD, exact);
            }
        }
        Ok(at)
    }
}

/// Where a decoded name or value lives.
#[derive(Clone, Copy)]
enum Src {
    Unknown,
    Static(&'static [u8]),
    Input(usize, usize),
    NameBuf,
    ValueBuf,
    /// A dynamic entry's name (1-based dynamic index).
    Table(usize),
}

fn resolve<'a>(
    src: Src,
    buf: &'a [u8],
    scratch: &'a [u8],
    table: &'a DynamicTable,
) -> Option<&'a [u8]> {
    match src {
        Src::Unknown => None,
        Src::Static(s) => Some(s),
        Src::Input(s, e) => Some(&buf[s..e]),
        Src::NameBuf | Src::ValueBuf => Some(scratch),
        Src::Table(i) => match table.get(i) {
            Lookup::Known(n, _) => Some(n),
            _ => None,
        },
    }
}

fn lookup(table: &DynamicTable, index: u64) -> Lookup<'_> {
    match usize::try_from(index) {
        Ok(0) | Err(_) => Lookup::Invalid,
        Ok(i) if i <= STATIC.len() => Lookup::Known(STATIC[i - 1].0, STATIC[i - 1].1),
        Ok(i) => table.get(i - STATIC.len()),
    }
}

/// Decodes an HPACK integer with a `prefix`-bit prefix from the start of `buf`: its value and
/// length. Values over 32 bits are an error.
fn integer(buf: &[u8], prefix: u32) -> Result<(u64, usize), Stop> {
    let max = (1u64 << prefix) - 1;
    let Some(&first) = buf.first() else {
        return Err(Stop::Incomplete);
    };
    let mut value = u64::from(first) & max;
    if value < max {
        return Ok((value, 1));
    }
    let mut shift = 0;
    for (i, &b) in buf.iter().enumerate().skip(1) {
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(Stop::Fatal(HpackError::InvalidInteger));
        }
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
        shift += 7;
        if shift > 28 {
            // Five continuation bytes carry 35 bits; a sixth is too many.
            return Err(Stop::Fatal(HpackError::InvalidInteger));
        }
    }
    Err(Stop::Incomplete)
}

/// A string literal's header: where its bytes are in the instruction, and its coding.
struct StrHeader {
    start: usize,
    end: usize,
    huffman: bool,
}

impl StrHeader {
    /// The fewest bytes its content decodes to (Huffman codes are at most 30 bits).
    fn min_decoded_len(&self) -> usize {
        let n = self.end - self.start;
        if self.huffman { n * 8 / 30 } else { n }
    }
}

/// Parses the string literal at `buf` (which starts at offset `base` of the instruction).
fn string(buf: &[u8], base: usize, max: usize) -> Result<StrHeader, Stop> {
    let Some(&first) = buf.first() else {
        return Err(Stop::Incomplete);
    };
    let (len, n) = integer(buf, 7)?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len.saturating_add(base + n) > max {
        return Err(Stop::Fatal(HpackError::Oversize));
    }
    if buf.len() - n < len {
        return Err(Stop::Incomplete);
    }
    Ok(StrHeader {
        start: base + n,
        end: base + n + len,
        huffman: first & 0x80 != 0,
    })
}
