//! From a file descriptor of the current task to its TCP socket's addresses.
//!
//! Walks `task->files->fdt->fd[fd]->private_data` (a `struct socket` when the file is a socket,
//! checked through the socket's back pointer to its file) and reads the `sock_common`
//! addresses, with member offsets from the running kernel's BTF (see `KernelOffsets`).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use mop_common::{AF_INET, AF_INET6, ConnAddrs, KernelOffsets, SOCK_STREAM};

/// What an fd turned out to be.
pub(crate) enum FdKind {
    /// A TCP socket over IPv4 or IPv6: its `struct sock` address and its addresses.
    Tcp(u64, ConnAddrs),
    /// Anything else: a file, pipe, UDP or Unix socket.
    Other,
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
unsafe fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// Classifies `fd` of the current task; `Err` when kernel memory could not be read.
#[inline(always)]
pub(crate) fn classify_fd(fd: i32, off: &KernelOffsets) -> Result<FdKind, i32> {
    if fd < 0 {
        return Ok(FdKind::Other);
    }
    // SAFETY: every read goes through bpf_probe_read_kernel, which faults safely.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let files: *const u8 = read_at(task, off.task_files)?;
        let fdt: *const u8 = read_at(files, off.files_fdt)?;
        let max_fds: u32 = read_at(fdt, off.fdt_max_fds)?;
        if fd as u32 >= max_fds {
            return Ok(FdKind::Other);
        }
        let fd_array: *const u8 = read_at(fdt, off.fdt_fd)?;
        let file: *const u8 = read_at(fd_array, (fd as u32) * 8)?;
        if file.is_null() {
            return Ok(FdKind::Other);
        }
        let socket: *const u8 = read_at(file, off.file_private_data)?;
        if socket.is_null() {
            return Ok(FdKind::Other);
        }
        // A socket's file points back at it; any other file's private data does not.
        let Ok(back) = read_at::<*const u8>(socket, off.socket_file) else {
            return Ok(FdKind::Other);
        };
        if back != file {
            return Ok(FdKind::Other);
        }
        let sock_type: u16 = read_at(socket, off.socket_type)?;
        if sock_type != SOCK_STREAM {
            return Ok(FdKind::Other);
        }
        let sk: *const u8 = read_at(socket, off.socket_sk)?;
        if sk.is_null() {
            return Ok(FdKind::Other);
        }
        match read_addrs(sk, off)? {
            Some(addrs) => Ok(FdKind::Tcp(sk as u64, addrs)),
            None => Ok(FdKind::Other),
        }
    }
}

/// The stream position of a TCP socket: `copied_seq` (bytes read so far) for `ingress`,
/// else `write_seq` (bytes written so far); low 32 bits, wrapping.
#[inline(always)]
pub(crate) fn stream_seq(sk: u64, ingress: bool, off: &KernelOffsets) -> Option<u32> {
    let field = if ingress {
        off.tcp_copied_seq
    } else {
        off.tcp_write_seq
    };
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { read_at::<u32>(sk as *const u8, field) }.ok()
}

/// Reads the addresses of a `struct sock`; `None` when it is neither IPv4 nor IPv6.
#[inline(always)]
pub(crate) unsafe fn read_addrs(
    sk: *const u8,
    off: &KernelOffsets,
) -> Result<Option<ConnAddrs>, i32> {
    // SAFETY: reads go through bpf_probe_read_kernel.
    unsafe {
        let family: u16 = read_at(sk, off.sk_family)?;
        let mut addrs = ConnAddrs {
            family,
            ..ConnAddrs::default()
        };
        if family == AF_INET {
            let local: [u8; 4] = read_at(sk, off.sk_rcv_saddr)?;
            let remote: [u8; 4] = read_at(sk, off.sk_daddr)?;
            addrs.local_addr[..4].copy_from_slice(&local);
            addrs.remote_addr[..4].copy_from_slice(&remote);
        } else if family == AF_INET6 {
            addrs.local_addr = read_at(sk, off.sk_v6_rcv_saddr)?;
            addrs.remote_addr = read_at(sk, off.sk_v6_daddr)?;
        } else {
            return Ok(None);
        }
        let dport: u16 = read_at(sk, off.sk_dport)?;
        addrs.remote_port = u16::from_be(dport);
        addrs.local_port = read_at(sk, off.sk_num)?;
        Ok(Some(addrs))
    }
}
