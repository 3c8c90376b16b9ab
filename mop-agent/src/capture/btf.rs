//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): just enough to find the
//! byte offset of a struct member, looking through anonymous struct and union members.
//!
//! aya has no CO-RE relocations for Rust eBPF programs, so the agent resolves the handful of
//! kernel struct members its programs read here and passes their offsets as a global.

use std::collections::HashMap;

use thiserror::Error;

/// Why an offset could not be resolved.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    /// The data is not BTF or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// No struct of that name in the kernel's BTF.
    #[error("struct {0} not found in kernel BTF")]
    StructNotFound(String),
    /// The struct has no member of that name.
    #[error("member {member} not found in struct {strukt}")]
    MemberNotFound {
        /// The struct searched.
        strukt: String,
        /// The member that was missing.
        member: String,
    },
    /// The member is a bitfield or not byte aligned.
    #[error("member {member} of struct {strukt} is a bitfield")]
    Bitfield {
        /// The struct searched.
        strukt: String,
        /// The bitfield member.
        member: String,
    },
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One struct or union member.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

/// What the reader keeps of each type.
#[derive(Clone, Debug)]
enum Type {
    /// A struct or union and its members.
    Composite { members: Vec<Member> },
    /// typedef, const, volatile, restrict, type tag: refers to another type.
    Alias(u32),
    /// Any other kind; never looked into.
    Other,
}

/// Members looked at by one [`Btf::member_offset`] lookup, at most. The kernel's deepest lookup
/// (`task_struct`) visits a few hundred; the bound keeps nested anonymous members that refer to
/// each other from taking exponential time.
const MEMBER_VISITS: u32 = 1 << 16;

/// Parsed BTF: types by id and struct ids by name.
pub struct Btf {
    strings: Vec<u8>,
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BtfError> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Parses raw BTF (little endian, as on `x86_64` and aarch64).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let mut btf = Self {
            strings,
            // Type id 0 is `void`.
            types: vec![Type::Other],
            structs_by_name: HashMap::new(),
        };
        btf.parse_types(types_data)?;
        Ok(btf)
    }

    fn parse_types(&mut self, data: &[u8]) -> Result<(), BtfError> {
        let mut at = 0;
        while at < data.len() {
            let name_off = u32_at(data, at)?;
            let info = u32_at(data, at + 4)?;
            let size_or_type = u32_at(data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let id = self.types.len() as u32;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(data, m + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name_off: u32_at(data, m)?,
                            type_id: u32_at(data, m + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    at += vlen * 12;
                    if kind == KIND_STRUCT && name_off != 0 {
                        let name = self.string(name_off)?.to_owned();
                        // The first definition wins; later ones are duplicates in split BTF.
                        self.structs_by_name.entry(name).or_insert(id);
                    }
                    Type::Composite { members }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                _ => {
                    at += match kind {
                        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                        KIND_ARRAY => 12,
                        KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                        KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                        _ => 0,
                    };
                    Type::Other
                }
            };
            self.types.push(ty);
        }
        Ok(())
    }

    fn string(&self, off: u32) -> Result<&str, BtfError> {
        let rest = self
            .strings
            .get(off as usize..)
            .ok_or(BtfError::Malformed("string offset out of bounds"))?;
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).map_err(|_| BtfError::Malformed("string not UTF-8"))
    }

    /// Follows aliases (typedef, const, ...) to the type they name; bounded against cycles.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Alias(next) => id = *next,
                other => return Some(other),
            }
        }
        None
    }

    /// Byte offset of `member` in the struct named `strukt`, searching anonymous members.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::StructNotFound(strukt.to_owned()))?;
        let mut budget = MEMBER_VISITS;
        match self.find_member(id, member, 0, &mut budget) {
            Some((bits, 0)) if bits % 8 == 0 => Ok(bits / 8),
            Some(_) => Err(BtfError::Bitfield {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            }),
            None => Err(BtfError::MemberNotFound {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            }),
        }
    }

    /// Bit offset and bitfield size of `member` within type `id`; recursion into anonymous
    /// members bounded in depth and in members visited (`budget`). An offset that does not fit
    /// in 32 bits is not found.
    fn find_member(
        &self,
        id: u32,
        member: &str,
        depth: u32,
        budget: &mut u32,
    ) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let Some(Type::Composite { members }) = self.resolve(id) else {
            return None;
        };
        for m in members {
            *budget = budget.checked_sub(1)?;
            if m.name_off == 0 {
                if let Some((bits, size)) = self.find_member(m.type_id, member, depth + 1, budget) {
                    return m.bit_offset.checked_add(bits).map(|bits| (bits, size));
                }
            } else if self.string(m.name_off).ok()? == member {
                return Some((m.bit_offset, m.bitfield_size));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw BTF of `types` (each a list of words: the type header, then its members) over the
    /// NUL-separated `strings`; `s(name)` in the callers gives a name's offset.
    fn build(strings: &[u8], types: &[&[u32]]) -> Vec<u8> {
        let t: Vec<u8> = types
            .iter()
            .flat_map(|words| words.iter())
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let mut data = Vec::new();
        for w in [0x0001_eb9f_u32, 24, 0, t.len() as u32, t.len() as u32] {
            data.extend(w.to_le_bytes());
        }
        data.extend((strings.len() as u32).to_le_bytes());
        data.extend(&t);
        data.extend(strings);
        data
    }

    /// The offset of `name` in `strings` (`\0name\0` must occur).
    fn name_in(strings: &[u8], name: &str) -> u32 {
        let needle = format!("\0{name}\0");
        strings
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap() as u32
            + 1
    }

    /// Builds BTF with `struct outer { int a; union { struct { int b; int c; }; long d; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0d\0long\0";
        let s = |name: &str| name_in(strings, name);
        build(
            strings,
            &[
                // 1: int (4 bytes)
                &[s("int"), KIND_INT << 24, 4, 32],
                // 2: long (8 bytes)
                &[s("long"), KIND_INT << 24, 8, 64],
                // 3: anonymous struct { int b; int c; }
                &[0, (KIND_STRUCT << 24) | 2, 8, s("b"), 1, 0, s("c"), 1, 32],
                // 4: anonymous union { struct 3; long d; }
                &[0, (KIND_UNION << 24) | 2, 8, 0, 3, 0, s("d"), 2, 0],
                // 5: struct outer { int a; union 4 at byte 8; }
                &[
                    s("outer"),
                    (KIND_STRUCT << 24) | 2,
                    16,
                    s("a"),
                    1,
                    0,
                    0,
                    4,
                    64,
                ],
            ],
        )
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Ok(0));
        assert_eq!(btf.member_offset("outer", "b"), Ok(8));
        assert_eq!(btf.member_offset("outer", "c"), Ok(12));
        assert_eq!(btf.member_offset("outer", "d"), Ok(8));
    }

    #[test]
    fn reports_missing_names() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(
            btf.member_offset("outer", "zz"),
            Err(BtfError::MemberNotFound {
                strukt: "outer".into(),
                member: "zz".into()
            })
        );
        assert_eq!(
            btf.member_offset("inner", "a"),
            Err(BtfError::StructNotFound("inner".into()))
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut cut = sample();
        cut.truncate(40);
        assert!(Btf::parse(&cut).is_err());
    }

    /// Found while writing the `btf` fuzz target: offsets of nested anonymous members that add up past
    /// `u32::MAX` overflowed (a panic in debug builds, a wrong offset in release).
    #[test]
    fn an_offset_past_u32_is_not_found() {
        let strings = b"\0int\0outer\0inner\0x\0";
        let s = |name: &str| name_in(strings, name);
        let data = build(
            strings,
            &[
                &[s("int"), KIND_INT << 24, 4, 32],
                // 2: struct inner { int x at bit 64; }
                &[s("inner"), (KIND_STRUCT << 24) | 1, 16, s("x"), 1, 64],
                // 3: struct outer { struct inner at bit u32::MAX - 7; }
                &[s("outer"), (KIND_STRUCT << 24) | 1, 16, 0, 2, u32::MAX - 7],
            ],
        );
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.member_offset("inner", "x"), Ok(8));
        assert!(matches!(
            btf.member_offset("outer", "x"),
            Err(BtfError::MemberNotFound { .. })
        ));
    }

    /// Found while writing the `btf` fuzz target: a struct whose anonymous members are the struct itself made
    /// a lookup visit members^depth of them (a hang); the visit budget ends it at once.
    #[test]
    fn anonymous_members_referring_to_their_struct_end_quickly() {
        let strings = b"\0int\0loop\0";
        let s = |name: &str| name_in(strings, name);
        let mut looping = vec![s("loop"), (KIND_STRUCT << 24) | 64, 8];
        for _ in 0..64 {
            looping.extend([0, 2, 0]);
        }
        let data = build(strings, &[&[s("int"), KIND_INT << 24, 4, 32], &looping]);
        let btf = Btf::parse(&data).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            btf.member_offset("loop", "missing"),
            Err(BtfError::MemberNotFound { .. })
        ));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn reads_the_running_kernel() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            panic!("this test needs /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)");
        };
        let btf = Btf::parse(&data).unwrap();
        // `struct sock` starts with its `sock_common`; the family sits past the addresses.
        assert!(btf.member_offset("sock_common", "skc_family").unwrap() >= 8);
        assert_eq!(btf.member_offset("sock_common", "skc_daddr"), Ok(0));
        assert_eq!(btf.member_offset("sock_common", "skc_rcv_saddr"), Ok(4));
        assert_eq!(btf.member_offset("sock", "__sk_common"), Ok(0));
        assert!(btf.member_offset("task_struct", "files").unwrap() > 0);
    }
}
