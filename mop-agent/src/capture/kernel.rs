//! What the programs need to know about the running kernel, computed at load time: struct
//! member offsets from BTF, the syscall numbers of the architecture, and where the syscall
//! arguments sit in `struct pt_regs`.

use mop_common::{KernelOffsets, SyscallOp, ops};

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
