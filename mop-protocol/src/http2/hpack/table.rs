//! The static table (RFC 7541 Appendix A) and one direction's dynamic table.

use std::collections::VecDeque;

/// The 61 static entries; HPACK index `i` is `STATIC[i - 1]`.
#[rustfmt::skip]
pub(crate) const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Per-entry overhead counted in the table size (RFC 7541 section 4.1).
pub(crate) const ENTRY_OVERHEAD: usize = 32;

/// The initial `SETTINGS_HEADER_TABLE_SIZE` and so the initial maximum table size.
pub(crate) const DEFAULT_MAX_SIZE: usize = 4096;

/// One dynamic entry. Its name and value are `data[off - base ..][..name_len + value_len]`.
#[derive(Clone, Copy, Debug)]
struct Entry {
    off: u64,
    name_len: u32,
    value_len: u32,
    /// The size the entry counts for. For an entry whose content is unknown, a lower bound.
    size: u32,
    known: bool,
}

/// What a dynamic index resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// The entry, known.
    Known(&'a [u8], &'a [u8]),
    /// An entry the parser cannot know (inserted while it was not looking, or with content it
    /// could not decode).
    Unknown,
    /// No such entry while the table is exact: the encoder is broken.
    Invalid,
}

/// One direction's dynamic table, as far as the parser knows it.
///
/// Index `i` (1-based, after the static entries) always means the `i`-th most recent insertion
/// that the encoder still holds. The parser counts every insertion it decodes and keeps them
/// newest first; when it loses part of a header block it forgets every entry
/// ([`DynamicTable::forget`]), because an unknown number of insertions may have happened. From
/// then on an index up to the number of entries kept is the same insertion for the encoder and
/// the parser, whatever sizes either side evicted by: both tables hold a suffix of the same
/// insertions, so an index past the parser's entries is unknown, never another entry.
#[derive(Debug)]
pub(crate) struct DynamicTable {
    entries: VecDeque<Entry>,
    /// Names and values of the entries, oldest first; evicted bytes stay at the front until a
    /// compaction.
    data: Vec<u8>,
    /// Absolute offset of `data[0]`.
    base: u64,
    size: usize,
    max_size: usize,
    /// The hard cap on `max_size`, whatever the encoder announces.
    cap: usize,
    /// True while the parser's table is the encoder's: every entry, size and the maximum known.
    exact: bool,
    /// Insertions counted since the start (entries that did not fit included).
    inserted: u64,
}

impl DynamicTable {
    /// A table at a connection's start (empty, exact) or of a connection joined later.
    pub(crate) fn new(cap: usize, exact: bool) -> Self {
        Self {
            entries: VecDeque::new(),
            data: Vec::new(),
            base: 0,
            size: 0,
            max_size: DEFAULT_MAX_SIZE.min(cap),
            cap,
            exact,
            inserted: 0,
        }
    }

    pub(crate) fn is_exact(&self) -> bool {
        self.exact
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn max_size(&self) -> usize {
        self.max_size
    }

    pub(crate) fn inserted(&self) -> u64 {
        self.inserted
    }

    /// Bytes held, for memory accounting.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.data.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Entry `i` (1-based dynamic index).
    pub(crate) fn get(&self, i: usize) -> Lookup<'_> {
        if i == 0 || i > self.entries.len() {
            return if self.exact {
                Lookup::Invalid
            } else {
                Lookup::Unknown
            };
        }
        let e = &self.entries[self.entries.len() - i];
        if !e.known {
            return Lookup::Unknown;
        }
        let start = (e.off - self.base) as usize;
        let mid = start + e.name_len as usize;
        let end = mid + e.value_len as usize;
        Lookup::Known(&self.data[start..mid], &self.data[mid..end])
    }

    /// Inserts a known entry.
    pub(crate) fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if !self.make_room(size) {
            return;
        }
        self.compact_for(name.len() + value.len());
        let off = self.base + self.data.len() as u64;
        self.data.extend_from_slice(name);
        self.data.extend_from_slice(value);
        self.push(Entry {
            off,
            name_len: name.len() as u32,
            value_len: value.len() as u32,
            size: size as u32,
            known: true,
        });
    }

    /// Inserts an entry whose content is unknown; `size` is its size when `exact`, else a lower
    /// bound (the table stops being exact).
    pub(crate) fn insert_unknown(&mut self, size: usize, exact: bool) {
        if !exact {
            self.exact = false;
        }
        let size = size.max(ENTRY_OVERHEAD);
        if !self.make_room(size) {
            return;
        }
        let off = self.base + self.data.len() as u64;
        self.push(Entry {
            off,
            name_len: 0,
            value_len: 0,
            size: size.min(u32::MAX as usize) as u32,
            known: false,
        });
    }

    /// A dynamic table size update to `new`. Returns false when `new` is over the cap: the
    /// table then keeps at most the cap and is no longer exact.
    pub(crate) fn set_max_size(&mut self, new: usize) -> bool {
        let fits = new <= self.cap;
        if !fits {
            self.exact = false;
        }
        self.max_size = new.min(self.cap);
        self.evict_to(self.max_size);
        if self.entries.is_empty() && new == 0 {
            // An empty table of size 0: exact again, whatever came before.
            self.exact = true;
        }
        fits
    }

    /// The decoder's `SETTINGS_HEADER_TABLE_SIZE` went down to `limit`, acknowledged: the
    /// encoder must follow with a size update at most `limit`, so entries over it are gone.
    pub(crate) fn shrink_to(&mut self, limit: usize) {
        if limit < self.max_size {
            self.max_size = limit;
            self.evict_to(limit);
        }
    }

    /// Forgets every entry: insertions were lost. Indices are trusted again from the next
    /// insertion on.
    pub(crate) fn forget(&mut self) {
        self.entries.clear();
        self.data.clear();
        self.size = 0;
        self.exact = false;
    }

    /// Evicts for a new entry of `size`; false when it does not fit at all (the table is then
    /// emptied, as RFC 7541 section 4.4 says, and the insertion counted).
    fn make_room(&mut self, size: usize) -> bool {
        if size > self.max_size {
            self.entries.clear();
            self.data.clear();
            self.size = 0;
            self.inserted += 1;
            return false;
        }
        self.evict_to(self.max_size - size);
        true
    }

    fn push(&mut self, e: Entry) {
        self.size += e.size as usize;
        self.entries.push_back(e);
        self.inserted += 1;
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let Some(e) = self.entries.pop_front() else {
                self.size = 0;
                break;
            };
            self.size -= e.size as usize;
        }
        if self.entries.is_empty() {
            self.base += self.data.len() as u64;
            self.data.clear();
        }
    }

    /// Drops evicted bytes at the front of `data` when they are at least half of it, before
    /// `more` bytes are appended. Keeps `data` under twice the live bytes plus one entry.
    fn compact_for(&mut self, more: usize) {
        let live_start = self
            .entries
            .front()
            .map_or(self.data.len() as u64, |e| e.off - self.base);
        let dead = live_start as usize;
        if dead > 0 && (dead >= self.data.len() / 2 || self.data.len() + more > 2 * self.cap) {
            self.data.drain(..dead);
            self.base += dead as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(t: &DynamicTable, i: usize) -> (String, String) {
        match t.get(i) {
            Lookup::Known(n, v) => (
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ),
            other => panic!("index {i}: {other:?}"),
        }
    }

    #[test]
    fn static_table_edges() {
        assert_eq!(STATIC[0], (&b":authority"[..], &b""[..]));
        assert_eq!(STATIC[1], (&b":method"[..], &b"GET"[..]));
        assert_eq!(STATIC[7], (&b":status"[..], &b"200"[..]));
        assert_eq!(STATIC[30], (&b"content-type"[..], &b""[..]));
        assert_eq!(STATIC[60], (&b"www-authenticate"[..], &b""[..]));
    }

    #[test]
    fn insert_evict_and_compact() {
        let mut t = DynamicTable::new(65536, true);
        t.set_max_size(100);
        t.insert(b"a", b"1"); // 34
        t.insert(b"b", b"2"); // 34
        assert_eq!(known(&t, 1), ("b".into(), "2".into()));
        assert_eq!(known(&t, 2), ("a".into(), "1".into()));
        t.insert(b"c", b"3"); // 102 > 100: a evicted
        assert_eq!(t.len(), 2);
        assert_eq!(t.size(), 68);
        assert_eq!(known(&t, 2), ("b".into(), "2".into()));
        assert_eq!(t.get(3), Lookup::Invalid);
        for i in 0..1000u32 {
            let v = i.to_string();
            t.insert(b"k", v.as_bytes());
            assert_eq!(known(&t, 1).1, v);
        }
        assert!(
            t.data.len() <= 2 * 100 + 64,
            "data kept small: {}",
            t.data.len()
        );
        // Too big: emptied and counted.
        let before = t.inserted();
        t.insert(&[b'x'; 80], b"");
        assert_eq!(t.len(), 0);
        assert_eq!(t.inserted(), before + 1);
    }

    #[test]
    fn forget_and_unknown() {
        let mut t = DynamicTable::new(65536, true);
        t.insert(b"a", b"1");
        t.forget();
        assert!(!t.is_exact());
        assert_eq!(t.get(1), Lookup::Unknown);
        t.insert(b"b", b"2");
        assert_eq!(known(&t, 1), ("b".into(), "2".into()));
        assert_eq!(t.get(2), Lookup::Unknown);
        t.insert_unknown(40, true);
        assert_eq!(t.get(1), Lookup::Unknown);
        assert_eq!(known(&t, 2), ("b".into(), "2".into()));
        // A size update to 0 makes it exact again.
        assert!(t.set_max_size(0));
        assert!(t.is_exact());
        assert_eq!(t.get(1), Lookup::Invalid);
    }

    #[test]
    fn cap_and_shrink() {
        let mut t = DynamicTable::new(1000, true);
        assert!(!t.set_max_size(5000));
        assert_eq!(t.max_size(), 1000);
        assert!(!t.is_exact());
        t.insert(&[b'n'; 300], &[b'v'; 300]);
        t.insert(b"a", b"1");
        t.shrink_to(100);
        assert_eq!(t.len(), 1);
        assert_eq!(known(&t, 1), ("a".into(), "1".into()));
    }
}
