//! TLS plaintext at the library: uprobes on OpenSSL's `SSL_read`/`SSL_write` (and the `_ex`
//! variants) report the plaintext buffers as data records of the underlying TCP connection.
//!
//! Which socket an `SSL*` uses comes from `SSL_set_fd`, or from the first socket syscall made
//! inside one of its calls (`note_socket`, called by the syscall path; `note_sock`, called by
//! the kernel-function paths, which see the `struct sock` instead of the fd). That
//! connection is marked TLS, so its ciphertext is never reported.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use mop_common::{
    ConnKey, Counter, SslCall, SslKey, SyscallOp,
    event::FLAG_TLS,
    maps::{SSL_OP_READ, SSL_OP_WRITE},
};

use crate::{
    emit::{DataSyscall, emit_data},
    maps::{MOP_CONFIG, MOP_PIDS, MOP_SSL_CALLS, MOP_SSL_FDS, MOP_SSL_SOCKS, bump},
    syscalls::{mark_tls, prepare_window, tcp_conn},
};

#[inline(always)]
fn selected(pid_tgid: u64) -> bool {
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is only tested for presence.
    unsafe { MOP_PIDS.get(&pid) }.is_some()
}

/// Records a TLS call's arguments at entry.
#[inline(always)]
fn enter(ctx: &ProbeContext, op: u32, extended: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !selected(pid_tgid) {
        return;
    }
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let len_out = if extended {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let key = SslKey {
        pid: (pid_tgid >> 32) as u32,
        pad: 0,
        ssl,
    };
    // SAFETY: the value is copied out at once.
    let fd = unsafe { MOP_SSL_FDS.get(&key) }.copied().unwrap_or(-1);
    let call = SslCall {
        ssl,
        buf,
        len_out,
        // SAFETY: helper without arguments.
        enter_ns: unsafe { bpf_ktime_get_ns() },
        fd,
        op,
    };
    let _ = MOP_SSL_CALLS.insert(&pid_tgid, &call, 0);
}

#[uprobe]
pub(crate) fn mop_ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, SSL_OP_READ, false);
    0
}

#[uprobe]
pub(crate) fn mop_ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, SSL_OP_WRITE, false);
    0
}

#[uprobe]
pub(crate) fn mop_ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, SSL_OP_READ, true);
    0
}

#[uprobe]
pub(crate) fn mop_ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, SSL_OP_WRITE, true);
    0
}

#[uprobe]
pub(crate) fn mop_ssl_set_fd(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !selected(pid_tgid) {
        return 0;
    }
    let (Some(ssl), Some(fd)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1)) else {
        return 0;
    };
    let key = SslKey {
        pid: (pid_tgid >> 32) as u32,
        pad: 0,
        ssl,
    };
    let _ = MOP_SSL_FDS.insert(&key, &fd, 0);
    0
}

/// Called at a socket syscall's entry: when the thread is inside a TLS call, remembers the
/// socket of its `SSL*` and returns true (the syscall's bytes are ciphertext).
#[inline(always)]
pub(crate) fn note_socket(pid_tgid: u64, fd: i32) -> bool {
    let Some(call) = MOP_SSL_CALLS.get_ptr_mut(&pid_tgid) else {
        return false;
    };
    // SAFETY: the LRU value stays valid for the program's run; only this thread writes its
    // own entry.
    unsafe {
        if (*call).fd != fd {
            (*call).fd = fd;
            let key = SslKey {
                pid: (pid_tgid >> 32) as u32,
                pad: 0,
                ssl: (*call).ssl,
            };
            let _ = MOP_SSL_FDS.insert(&key, &fd, 0);
        }
    }
    true
}

/// Called at a kernel TCP function's entry (kernel-function paths): when the thread is
/// inside a TLS call, remembers the socket of its `SSL*` and returns true (the bytes are
/// ciphertext).
#[inline(always)]
pub(crate) fn note_sock(pid_tgid: u64, sk: u64) -> bool {
    // SAFETY: the value is copied out at once.
    let Some(call) = (unsafe { MOP_SSL_CALLS.get(&pid_tgid) }).copied() else {
        return false;
    };
    let key = SslKey {
        pid: (pid_tgid >> 32) as u32,
        pad: 0,
        ssl: call.ssl,
    };
    let _ = MOP_SSL_SOCKS.insert(&key, &sk, 0);
    true
}

#[uretprobe]
pub(crate) fn mop_ssl_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the entry is copied out before it is removed.
    let Some(call) = (unsafe { MOP_SSL_CALLS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = MOP_SSL_CALLS.remove(&pid_tgid);
    let ret: i64 = ctx.ret();
    let bytes = if call.len_out == 0 {
        if ret <= 0 {
            return 0;
        }
        ret as u64
    } else {
        if ret != 1 {
            return 0;
        }
        // SAFETY: the helper checks the user address.
        match unsafe { bpf_probe_read_user(call.len_out as *const u64) } {
            Ok(n) if n > 0 => n,
            _ => return 0,
        }
    };
    let ssl_key = SslKey {
        pid: (pid_tgid >> 32) as u32,
        pad: 0,
        ssl: call.ssl,
    };
    let mut sc = DataSyscall {
        op: if call.op == SSL_OP_READ {
            SyscallOp::Read
        } else {
            SyscallOp::Write
        },
        fd: -1,
        buf: call.buf,
        len: 0,
        ret: bytes,
        enter_ns: call.enter_ns,
        // SAFETY: helper without arguments.
        exit_ns: unsafe { bpf_ktime_get_ns() },
        pid_tgid,
        flags: FLAG_TLS,
    };
    let cfg = MOP_CONFIG.load();
    // SAFETY: the value is copied out at once.
    let info = if let Some(sk) = unsafe { MOP_SSL_SOCKS.get(&ssl_key) }.copied() {
        // A kernel-function path saw the socket this `SSL*` uses.
        crate::kfuncs::tls_conn(ssl_key.pid, sk, &sc, &cfg)
    } else {
        let fd = if call.fd >= 0 {
            call.fd
        } else {
            // SAFETY: the value is copied out at once.
            match unsafe { MOP_SSL_FDS.get(&ssl_key) }.copied() {
                Some(fd) => fd,
                None => {
                    bump(Counter::TlsNoSocket);
                    return 0;
                }
            }
        };
        sc.fd = fd;
        let key = ConnKey {
            pid: ssl_key.pid,
            fd,
        };
        tcp_conn(&key, &cfg).map(|mut info| {
            mark_tls(&key);
            prepare_window(&key, &mut info, &sc);
            info
        })
    };
    if let Some(info) = info {
        emit_data(&info, &sc, &cfg);
    }
    0
}
