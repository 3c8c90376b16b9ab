//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): just enough to find the
//! byte offset of a struct member (looking through anonymous struct and union members), the
//! value of an enumerator and the parameter count of a function.
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
    /// No function of that name in the kernel's BTF.
    #[error("function {0} not found in kernel BTF")]
    FuncNotFound(String),
    /// No enumerator of that name in the named enum.
    #[error("enumerator {value} not found in enum {name}")]
    EnumValueNotFound {
        /// The enum searched.
        name: String,
        /// The enumerator that was missing.
        value: String,
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
const KIND_FUNC: u32 = 12;
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
    /// A function: its name and its prototype.
    Func { name_off: u32, proto: u32 },
    /// A function prototype: its parameter count.
    FuncProto { params: u32 },
    /// An enum (or 64-bit enum): its name and its enumerators.
    Enum {
        name_off: u32,
        values: Vec<(u32, i64)>,
    },
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
                KIND_FUNC => Type::Func {
                    name_off,
                    proto: size_or_type,
                },
                KIND_FUNC_PROTO => {
                    at += vlen * 8;
                    Type::FuncProto {
                        params: vlen as u32,
                    }
                }
                KIND_ENUM | KIND_ENUM64 => {
                    let entry = if kind == KIND_ENUM { 8 } else { 12 };
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let e = at + i * entry;
                        let lo = u32_at(data, e + 4)?;
                        let value = if kind == KIND_ENUM {
                            // Signedness is in kind_flag; the kernel's enums of interest are small.
                            i64::from(lo.cast_signed())
                        } else {
                            i64::from(u32_at(data, e + 8)?) << 32 | i64::from(lo)
                        };
                        values.push((u32_at(data, e)?, value));
                    }
                    at += vlen * entry;
                    Type::Enum { name_off, values }
                }
                _ => {
                    at += match kind {
                        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                        KIND_ARRAY => 12,
                        KIND_DATASEC => vlen * 12,
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

    /// The number of parameters of the kernel function `name`.
    pub fn func_param_count(&self, name: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .find_map(|t| match t {
                Type::Func { name_off, proto } if self.string(*name_off).ok()? == name => {
                    match self.resolve(*proto)? {
                        Type::FuncProto { params } => Some(*params),
                        _ => None,
                    }
                }
                _ => None,
            })
            .ok_or_else(|| BtfError::FuncNotFound(name.to_owned()))
    }

    /// True when the kernel has a function called `name`.
    pub fn has_func(&self, name: &str) -> bool {
        self.func_param_count(name).is_ok()
    }

    /// The value of enumerator `value` of the enum named `name`.
    pub fn enum_value(&self, name: &str, value: &str) -> Result<i64, BtfError> {
        self.types
            .iter()
            .find_map(|t| match t {
                Type::Enum { name_off, values } if self.string(*name_off).ok()? == name => values
                    .iter()
                    .find(|(v, _)| self.string(*v).ok() == Some(value))
                    .map(|(_, n)| *n),
                _ => None,
            })
            .ok_or_else(|| BtfError::EnumValueNotFound {
                name: name.to_owned(),
                value: value.to_owned(),
            })
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

/// Writes raw BTF for tests of the readers built on [`Btf`].
#[cfg(test)]
pub(crate) mod builder {
    use super::{
        KIND_ENUM, KIND_FUNC, KIND_FUNC_PROTO, KIND_INT, KIND_STRUCT, KIND_TYPEDEF, KIND_UNION,
    };

    /// A member of a struct or union: name (empty for anonymous), type id, bit offset.
    pub(crate) type MemberSpec<'a> = (&'a str, u32, u32);

    /// Types added one by one; each method returns the new type's id.
    pub(crate) struct BtfBuilder {
        strings: Vec<u8>,
        types: Vec<u8>,
        next_id: u32,
    }

    impl BtfBuilder {
        pub(crate) fn new() -> Self {
            Self {
                strings: vec![0],
                types: Vec::new(),
                next_id: 1,
            }
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        fn words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend(w.to_le_bytes());
            }
        }

        fn id(&mut self) -> u32 {
            self.next_id += 1;
            self.next_id - 1
        }

        pub(crate) fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let n = self.name(name);
            self.words(&[n, KIND_INT << 24, bytes, bytes * 8]);
            self.id()
        }

        pub(crate) fn typedef(&mut self, name: &str, to: u32) -> u32 {
            let n = self.name(name);
            self.words(&[n, KIND_TYPEDEF << 24, to]);
            self.id()
        }

        /// A struct (or union) of `size` bytes.
        pub(crate) fn composite(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            members: &[MemberSpec<'_>],
        ) -> u32 {
            let n = self.name(name);
            let kind = if union { KIND_UNION } else { KIND_STRUCT };
            self.words(&[n, (kind << 24) | members.len() as u32, size]);
            for (name, ty, bits) in members {
                let m = self.name(name);
                self.words(&[m, *ty, *bits]);
            }
            self.id()
        }

        pub(crate) fn enumeration(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
            let n = self.name(name);
            self.words(&[n, (KIND_ENUM << 24) | values.len() as u32, 4]);
            for (name, v) in values {
                let m = self.name(name);
                self.words(&[m, v.cast_unsigned()]);
            }
            self.id()
        }

        /// A function with `params` parameters of type `ty`.
        pub(crate) fn func(&mut self, name: &str, params: u32, ty: u32) -> u32 {
            self.words(&[0, (KIND_FUNC_PROTO << 24) | params, ty]);
            for _ in 0..params {
                self.words(&[0, ty]);
            }
            let proto = self.id();
            let n = self.name(name);
            self.words(&[n, KIND_FUNC << 24, proto]);
            self.id()
        }

        pub(crate) fn build(&self) -> Vec<u8> {
            let mut data = Vec::new();
            let type_len = self.types.len() as u32;
            for w in [0x0001_eb9f_u32, 24, 0, type_len, type_len] {
                data.extend(w.to_le_bytes());
            }
            data.extend((self.strings.len() as u32).to_le_bytes());
            data.extend(&self.types);
            data.extend(&self.strings);
            data
        }
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

    #[test]
    fn finds_functions_and_enumerators() {
        let mut b = builder::BtfBuilder::new();
        let int = b.int("int", 4);
        b.func("tcp_recvmsg", 5, int);
        b.func("tcp_sendmsg", 3, int);
        b.enumeration("iter_type", &[("ITER_UBUF", 0), ("ITER_IOVEC", 1)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.func_param_count("tcp_recvmsg"), Ok(5));
        assert_eq!(btf.func_param_count("tcp_sendmsg"), Ok(3));
        assert!(!btf.has_func("tcp_sendpage"));
        assert_eq!(
            btf.func_param_count("nope"),
            Err(BtfError::FuncNotFound("nope".into()))
        );
        assert_eq!(btf.enum_value("iter_type", "ITER_IOVEC"), Ok(1));
        assert!(btf.enum_value("iter_type", "ITER_PIPE").is_err());
        assert!(btf.enum_value("other", "ITER_IOVEC").is_err());
    }

    #[test]
    fn reads_functions_of_the_running_kernel() {
        let data = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.func_param_count("tcp_sendmsg"), Ok(3));
        let n = btf.func_param_count("tcp_recvmsg");
        // 4 from 6.16 (`addr_len` dropped), 5 from 5.19, 6 before.
        assert!(matches!(n, Ok(4..=6)), "{n:?}");
        assert!(btf.enum_value("iter_type", "ITER_IOVEC").is_ok());
    }
}
