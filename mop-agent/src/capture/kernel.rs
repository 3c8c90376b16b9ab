//! What the programs need to know about the running kernel, computed at load time: struct
//! member offsets from BTF, the syscall numbers of the architecture, and where the syscall
//! arguments sit in `struct pt_regs`.

use mop_common::{
    KernelOffsets, SyscallOp,
    kfunc::{ITER_TYPE_NONE, KfuncConfig},
    ops,
};

use super::btf::{Btf, BtfError};

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Resolves every member offset the programs read.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    // `struct sock` embeds `struct sock_common` as `__sk_common`; the skc_* members live there.
    let common = btf.member_offset("sock", "__sk_common")?;
    let sk = |m: &str| btf.member_offset("sock_common", m).map(|o| common + o);
    Ok(KernelOffsets {
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdt_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdt_fd: btf.member_offset("fdtable", "fd")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        socket_type: btf.member_offset("socket", "type")?,
        socket_file: btf.member_offset("socket", "file")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        sk_family: sk("skc_family")?,
        sk_daddr: sk("skc_daddr")?,
        sk_rcv_saddr: sk("skc_rcv_saddr")?,
        sk_dport: sk("skc_dport")?,
        sk_num: sk("skc_num")?,
        sk_v6_daddr: sk("skc_v6_daddr")?,
        sk_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
        msghdr_iov: btf.member_offset("user_msghdr", "msg_iov")?,
        msghdr_iovlen: btf.member_offset("user_msghdr", "msg_iovlen")?,
        tcp_copied_seq: btf.member_offset("tcp_sock", "copied_seq")?,
        tcp_write_seq: btf.member_offset("tcp_sock", "write_seq")?,
        binprm_filename: btf.member_offset("linux_binprm", "filename")?,
    })
}

/// Resolves what the kernel-function paths read from `struct msghdr` and `struct iov_iter`.
///
/// Handles the three layouts of `iov_iter`: before 5.14 (`unsigned int type` holding the
/// iter type and the direction bit, `iov`), 5.14 to 6.3 (`u8 iter_type`, `iov`, and from 6.0
/// `ubuf` in the same union) and from 6.4 (`__iov`); the `enum iter_type` values changed too
/// (`ITER_IOVEC` is 4 before 5.14, 0 from 5.14 and 1 once `ITER_UBUF` took 0 in 6.4).
pub fn kfunc_config(btf: &Btf) -> Result<KfuncConfig, BtfError> {
    let iter = |m: &str| btf.member_offset("iov_iter", m);
    let (iter_type, iter_type_mask) = match iter("iter_type") {
        Ok(off) => (off, 0xff),
        // Before 5.14: `type` = ITER_* | READ (0) or WRITE (1).
        Err(BtfError::MemberNotFound { .. }) => (iter("type")?, !1),
        Err(e) => return Err(e),
    };
    let iter_iov = match iter("__iov") {
        Ok(off) => off,
        Err(BtfError::MemberNotFound { .. }) => iter("iov")?,
        Err(e) => return Err(e),
    };
    let (iter_ubuf, iter_ubuf_ptr) = match btf.enum_value("iter_type", "ITER_UBUF") {
        Ok(v) => (enum_u32(v), iter("ubuf")?),
        Err(BtfError::EnumValueNotFound { .. }) => (ITER_TYPE_NONE, 0),
        Err(e) => return Err(e),
    };
    Ok(KfuncConfig {
        msghdr_iter: btf.member_offset("msghdr", "msg_iter")?,
        iter_type,
        iter_type_mask,
        iter_iovec: enum_u32(btf.enum_value("iter_type", "ITER_IOVEC")?),
        iter_ubuf,
        iter_iov_offset: iter("iov_offset")?,
        iter_iov,
        iter_ubuf_ptr,
        iter_nr_segs: iter("nr_segs")?,
        pad: 0,
    })
}

/// An `enum iter_type` value as the programs compare it (small and non-negative).
fn enum_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(ITER_TYPE_NONE)
}

/// Offsets of the six syscall arguments in this architecture's user `struct pt_regs`.
pub fn syscall_arg_offsets(btf: &Btf) -> Result<[u32; 6], BtfError> {
    if cfg!(target_arch = "x86_64") {
        let mut out = [0; 6];
        for (slot, reg) in out.iter_mut().zip(["di", "si", "dx", "r10", "r8", "r9"]) {
            *slot = btf.member_offset("pt_regs", reg)?;
        }
        Ok(out)
    } else {
        // aarch64: `regs[0..5]` at the start of `struct user_pt_regs` inside `pt_regs`.
        let base = btf.member_offset("pt_regs", "regs")?;
        Ok([base, base + 8, base + 16, base + 24, base + 32, base + 40])
    }
}

/// This architecture's syscall numbers for the operations the programs handle.
pub fn syscall_table() -> &'static [(u32, SyscallOp)] {
    if cfg!(target_arch = "x86_64") {
        ops::X86_64_SYSCALLS
    } else {
        ops::AARCH64_SYSCALLS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::btf::builder::BtfBuilder;

    /// `struct msghdr` with `msg_iter` at byte 16, and `iov_iter` as built by `iter`.
    fn kernel_with(iter: impl FnOnce(&mut BtfBuilder, u32, u32, u32) -> u32) -> Btf {
        let mut b = BtfBuilder::new();
        let u8_t = b.int("u8", 1);
        let uint = b.int("unsigned int", 4);
        let long = b.int("long unsigned int", 8);
        let size_t = b.typedef("size_t", long);
        let iter_id = iter(&mut b, u8_t, uint, size_t);
        b.composite(
            false,
            "msghdr",
            96,
            &[("msg_name", long, 0), ("msg_iter", iter_id, 128)],
        );
        Btf::parse(&b.build()).unwrap()
    }

    #[test]
    fn iov_iter_before_5_14() {
        // 5.10: unsigned int type; size_t iov_offset; size_t count; union { iov; ... };
        // union { nr_segs; ... };
        let btf = kernel_with(|b, _, uint, size_t| {
            let iov_union = b.composite(true, "", 8, &[("iov", size_t, 0), ("bvec", size_t, 0)]);
            let segs_union = b.composite(true, "", 8, &[("nr_segs", size_t, 0)]);
            let iter = b.composite(
                false,
                "iov_iter",
                40,
                &[
                    ("type", uint, 0),
                    ("iov_offset", size_t, 64),
                    ("count", size_t, 128),
                    ("", iov_union, 192),
                    ("", segs_union, 256),
                ],
            );
            b.enumeration(
                "iter_type",
                &[("ITER_IOVEC", 4), ("ITER_KVEC", 8), ("ITER_BVEC", 16)],
            );
            iter
        });
        let k = kfunc_config(&btf).unwrap();
        assert_eq!(k.msghdr_iter, 16);
        assert_eq!((k.iter_type, k.iter_type_mask), (0, !1));
        assert_eq!((k.iter_iovec, k.iter_ubuf), (4, ITER_TYPE_NONE));
        assert_eq!((k.iter_iov_offset, k.iter_iov, k.iter_nr_segs), (8, 24, 32));
        // A WRITE iovec iterator (type 4 | 1) is an iovec once masked.
        assert_eq!(5 & k.iter_type_mask, k.iter_iovec);
    }

    #[test]
    fn iov_iter_6_0_with_ubuf() {
        // 6.0: u8 iter_type; bool nofault; bool data_source; size_t iov_offset; size_t count;
        // union { iov; ...; ubuf; }; union { nr_segs; ... };
        let btf = kernel_with(|b, u8_t, _, size_t| {
            let iov_union = b.composite(true, "", 8, &[("iov", size_t, 0), ("ubuf", size_t, 0)]);
            let segs_union = b.composite(true, "", 8, &[("nr_segs", size_t, 0)]);
            let iter = b.composite(
                false,
                "iov_iter",
                40,
                &[
                    ("iter_type", u8_t, 0),
                    ("nofault", u8_t, 8),
                    ("data_source", u8_t, 16),
                    ("iov_offset", size_t, 64),
                    ("count", size_t, 128),
                    ("", iov_union, 192),
                    ("", segs_union, 256),
                ],
            );
            b.enumeration(
                "iter_type",
                &[("ITER_IOVEC", 0), ("ITER_KVEC", 1), ("ITER_UBUF", 6)],
            );
            iter
        });
        let k = kfunc_config(&btf).unwrap();
        assert_eq!((k.iter_type, k.iter_type_mask), (0, 0xff));
        assert_eq!((k.iter_iovec, k.iter_ubuf), (0, 6));
        assert_eq!((k.iter_iov, k.iter_ubuf_ptr, k.iter_nr_segs), (24, 24, 32));
    }

    #[test]
    fn iov_iter_from_6_4() {
        // 6.4+: ...; size_t iov_offset; union { struct iovec __ubuf_iovec; struct { union {
        // __iov; ...; ubuf; }; size_t count; }; }; union { nr_segs; ... };
        let btf = kernel_with(|b, u8_t, _, size_t| {
            let ptrs = b.composite(true, "", 8, &[("__iov", size_t, 0), ("ubuf", size_t, 0)]);
            let with_count = b.composite(false, "", 16, &[("", ptrs, 0), ("count", size_t, 64)]);
            let outer = b.composite(
                true,
                "",
                16,
                &[("__ubuf_iovec", size_t, 0), ("", with_count, 0)],
            );
            let segs_union = b.composite(true, "", 8, &[("nr_segs", size_t, 0)]);
            let iter = b.composite(
                false,
                "iov_iter",
                40,
                &[
                    ("iter_type", u8_t, 0),
                    ("iov_offset", size_t, 64),
                    ("", outer, 128),
                    ("", segs_union, 256),
                ],
            );
            b.enumeration(
                "iter_type",
                &[("ITER_UBUF", 0), ("ITER_IOVEC", 1), ("ITER_BVEC", 2)],
            );
            iter
        });
        let k = kfunc_config(&btf).unwrap();
        assert_eq!((k.iter_iovec, k.iter_ubuf), (1, 0));
        assert_eq!(
            (k.iter_iov_offset, k.iter_iov, k.iter_ubuf_ptr),
            (8, 16, 16)
        );
        assert_eq!(k.iter_nr_segs, 32);
    }

    #[test]
    fn iov_iter_of_the_running_kernel() {
        let data = std::fs::read(VMLINUX_BTF).expect("this test needs kernel BTF");
        let btf = Btf::parse(&data).unwrap();
        let k = kfunc_config(&btf).unwrap();
        assert_ne!(k.iter_iovec, ITER_TYPE_NONE);
        assert_ne!(k.iter_iov, k.iter_nr_segs);
    }

    #[test]
    fn resolves_every_offset_on_this_kernel() {
        let data = std::fs::read(VMLINUX_BTF).expect("this test needs kernel BTF");
        let btf = Btf::parse(&data).unwrap();
        let off = kernel_offsets(&btf).unwrap();
        // Stable facts: the v4 addresses lead sock_common; user_msghdr is a user ABI.
        assert_eq!((off.sk_daddr, off.sk_rcv_saddr), (0, 4));
        assert_eq!((off.msghdr_iov, off.msghdr_iovlen), (16, 24));
        assert_ne!(off.socket_sk, off.socket_file);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                syscall_arg_offsets(&btf).unwrap(),
                [112, 104, 96, 56, 72, 64]
            );
        }
    }
}
