//! What the kernel-function capture paths share: fentry/fexit (`fentry.rs`) and kprobes
//! (`kprobe.rs`) only fetch arguments and return values and call these functions, which write
//! the same records as the syscall path (see `mop_common::kfunc`).
//!
//! Connections are keyed by `(pid, struct sock)` in `MOP_SOCK_CONNS`; records carry `fd = -1`.
//! A send or receive saves its socket and the user buffer described by the `msghdr`'s
//! `iov_iter` at entry (the iterator is advanced by the time the function returns) and reports
//! the bytes at return, from the saved buffer.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel};
use mop_common::{
    ConnInfo, Counter, EventKind, KernelConfig, SyscallOp,
    event::{FLAG_SENDFILE, ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN},
    kfunc::{
        KOP_CONNECT, KOP_RECV, KOP_SENDPAGE, KfuncConfig, KfuncInflight, SRC_KERNEL_IOV, SRC_NONE,
        SRC_USER, SockKey,
    },
    maps::{CONN_FLAG_TLS, CONN_TCP, INFLIGHT_IN_TLS, PROTO_HTTP2, PROTO_OTHER, PROTO_UNKNOWN},
};

use crate::{
    emit::{
        DataSyscall, begin_data, capture_contiguous, capture_iovec, emit_conn_event, read_iov,
        submit_data,
    },
    maps::{MOP_CONFIG, MOP_KFUNC_CONFIG, MOP_KFUNC_INFLIGHT, MOP_SOCK_CONNS, bump},
    sock::read_addrs,
    syscalls::{is_http2_start, selected},
};

/// `-EINPROGRESS`: a non-blocking connect that has started; the local address is bound.
const EINPROGRESS: i64 = -115;

/// The pid-tgid of the current task when its process is selected for capture.
#[inline(always)]
pub(crate) fn current_selected() -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if selected(pid_tgid) {
        Some(pid_tgid)
    } else {
        None
    }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
fn read_kernel<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Saves an in-flight call; counts a full map.
#[inline(always)]
fn save(pid_tgid: u64, inflight: &KfuncInflight) {
    if MOP_KFUNC_INFLIGHT.insert(&pid_tgid, inflight, 0).is_err() {
        bump(Counter::InflightFull);
    }
}

/// Takes the call saved at entry for this thread, when it is `op`.
#[inline(always)]
fn take(pid_tgid: u64, op: u32) -> Option<KfuncInflight> {
    // SAFETY: the entry is copied out before it is removed.
    let inflight = unsafe { MOP_KFUNC_INFLIGHT.get(&pid_tgid) }.copied()?;
    let _ = MOP_KFUNC_INFLIGHT.remove(&pid_tgid);
    (inflight.op & !INFLIGHT_IN_TLS == op).then_some(inflight)
}

/// Where the bytes of `msg` go or come from: `(source, buf, nr_segs, skip)`.
#[inline(always)]
fn iter_source(msg: u64, k: &KfuncConfig) -> (u32, u64, u64, u64) {
    let iter = msg + u64::from(k.msghdr_iter);
    let Some(word) = read_kernel::<u32>(iter, k.iter_type) else {
        return (SRC_NONE, 0, 0, 0);
    };
    let kind = word & k.iter_type_mask;
    let skip = read_kernel::<u64>(iter, k.iter_iov_offset).unwrap_or(0);
    if kind == k.iter_ubuf {
        let ubuf = read_kernel::<u64>(iter, k.iter_ubuf_ptr).unwrap_or(0);
        (SRC_USER, ubuf + skip, 0, 0)
    } else if kind == k.iter_iovec {
        let iov = read_kernel::<u64>(iter, k.iter_iov).unwrap_or(0);
        let nr_segs = read_kernel::<u64>(iter, k.iter_nr_segs).unwrap_or(0);
        (SRC_KERNEL_IOV, iov, nr_segs, skip)
    } else {
        // ITER_BVEC (sendfile and splice from 6.5, `MSG_SPLICE_PAGES`), ITER_KVEC, ...
        (SRC_NONE, 0, 0, 0)
    }
}

/// Entry of `tcp_sendmsg(sk, msg, size)` or `tcp_recvmsg(sk, msg, ...)`.
#[inline(always)]
pub(crate) fn data_enter(pid_tgid: u64, sk: u64, msg: u64, op: u32) {
    let k = MOP_KFUNC_CONFIG.load();
    let (source, buf, nr_segs, skip) = iter_source(msg, &k);
    let in_tls = crate::tls::note_sock(pid_tgid, sk);
    save(
        pid_tgid,
        &KfuncInflight {
            enter_ns: now_ns(),
            sk,
            buf,
            nr_segs,
            skip,
            op: op | if in_tls { INFLIGHT_IN_TLS } else { 0 },
            source,
        },
    );
}

/// Entry of `tcp_sendpage(sk, page, offset, size, flags)`: bytes without a user buffer.
#[inline(always)]
pub(crate) fn sendpage_enter(pid_tgid: u64, sk: u64) {
    let in_tls = crate::tls::note_sock(pid_tgid, sk);
    save(
        pid_tgid,
        &KfuncInflight {
            enter_ns: now_ns(),
            sk,
            buf: 0,
            nr_segs: 0,
            skip: 0,
            op: KOP_SENDPAGE | if in_tls { INFLIGHT_IN_TLS } else { 0 },
            source: SRC_NONE,
        },
    );
}

/// Return of a send, receive or sendpage with its return value: writes the data record.
#[inline(always)]
pub(crate) fn data_exit(pid_tgid: u64, op: u32, ret: i64) {
    let Some(inflight) = take(pid_tgid, op) else {
        return;
    };
    if ret <= 0 {
        return;
    }
    let key = SockKey {
        pid: (pid_tgid >> 32) as u32,
        pad: 0,
        sk: inflight.sk,
    };
    let cfg = MOP_CONFIG.load();
    let Some(mut info) = sock_conn(&key, &cfg) else {
        return;
    };
    if inflight.op & INFLIGHT_IN_TLS != 0 || info.flags & CONN_FLAG_TLS != 0 {
        if info.flags & CONN_FLAG_TLS == 0 {
            mark_sock_tls(&key);
        }
        return;
    }
    let sc = DataSyscall {
        op: if op == KOP_RECV {
            SyscallOp::Read
        } else {
            SyscallOp::Write
        },
        fd: -1,
        buf: inflight.buf,
        len: 0,
        ret: ret as u64,
        enter_ns: inflight.enter_ns,
        exit_ns: now_ns(),
        pid_tgid,
        flags: 0,
    };
    if info.proto == PROTO_UNKNOWN {
        info.proto = if starts_http2(&inflight, sc.ret) {
            PROTO_HTTP2
        } else {
            PROTO_OTHER
        };
        set_proto(&key, info.proto);
    }
    let Some((ev, cap)) = begin_data(&info, &sc, &cfg) else {
        return;
    };
    let captured = match inflight.source {
        SRC_USER => capture_contiguous(ev, inflight.buf, sc.ret, cap),
        SRC_KERNEL_IOV => capture_iovec::<true>(
            ev,
            inflight.buf,
            inflight.nr_segs,
            inflight.skip,
            sc.ret,
            cap,
        ),
        _ => {
            ev.header.flags |= FLAG_SENDFILE;
            0
        }
    };
    submit_data(ev, captured, &cfg);
}

/// Remembers what a connection speaks.
#[inline(always)]
fn set_proto(key: &SockKey, proto: u32) {
    if let Some(entry) = MOP_SOCK_CONNS.get_ptr_mut(key) {
        // SAFETY: LRU map values stay valid for the program's run; a concurrent update of the
        // same field writes the same decision.
        unsafe { (*entry).proto = proto };
    }
}

/// True when the nine bytes of user memory at `first` start an HTTP/2 connection.
#[inline(always)]
fn user_starts_http2(first: u64) -> bool {
    if first == 0 {
        return false;
    }
    // SAFETY: the helper checks the user address.
    match unsafe { aya_ebpf::helpers::bpf_probe_read_user(first as *const [u8; 9]) } {
        Ok(h) => is_http2_start(&h),
        Err(_) => false,
    }
}

/// True when the first bytes of a send or receive start an HTTP/2 connection (see
/// `syscalls::is_http2_start`).
#[inline(always)]
fn starts_http2(inflight: &KfuncInflight, ret: u64) -> bool {
    if ret < 9 {
        return false;
    }
    let first = match inflight.source {
        SRC_USER => inflight.buf,
        SRC_KERNEL_IOV => match read_iov::<true>(inflight.buf, 0) {
            Some(v) => v.base + inflight.skip,
            None => 0,
        },
        _ => 0,
    };
    user_starts_http2(first)
}

/// The connection of socket `key.sk` in process `key.pid`, reading its addresses on first
/// sight; `None` when it is not IPv4 or IPv6.
#[inline(always)]
fn sock_conn(key: &SockKey, cfg: &KernelConfig) -> Option<ConnInfo> {
    // SAFETY: the entry is copied out at once.
    if let Some(info) = unsafe { MOP_SOCK_CONNS.get(key) }.copied() {
        return Some(info);
    }
    track(key, ROLE_UNKNOWN, cfg)
}

/// Reads the socket's addresses and remembers the connection with `role`.
#[inline(always)]
fn track(key: &SockKey, role: u32, cfg: &KernelConfig) -> Option<ConnInfo> {
    if key.sk == 0 {
        return None;
    }
    // SAFETY: read_addrs reads through bpf_probe_read_kernel.
    let addrs = match unsafe { read_addrs(key.sk as *const u8, &cfg.offsets) } {
        Ok(Some(addrs)) => addrs,
        Ok(None) => return None,
        Err(_) => {
            bump(Counter::SocketLookupFailed);
            return None;
        }
    };
    let info = ConnInfo {
        conn_id: key.sk,
        addrs,
        kind: CONN_TCP,
        role,
        proto: PROTO_UNKNOWN,
        flags: 0,
    };
    let _ = MOP_SOCK_CONNS.insert(key, &info, 0);
    bump(Counter::ConnsTracked);
    Some(info)
}

/// Marks a socket as carrying TLS (its bytes are never reported again).
#[inline(always)]
pub(crate) fn mark_sock_tls(key: &SockKey) {
    if let Some(entry) = MOP_SOCK_CONNS.get_ptr_mut(key) {
        // SAFETY: LRU map values stay valid for the program's run; setting a bit is idempotent.
        unsafe { (*entry).flags |= CONN_FLAG_TLS };
    }
}

/// The connection of the socket a TLS call used, for the TLS return probe: marks it TLS and
/// decides its protocol on the plaintext `sc` carries.
#[inline(always)]
pub(crate) fn tls_conn(
    pid: u32,
    sk: u64,
    sc: &DataSyscall,
    cfg: &KernelConfig,
) -> Option<ConnInfo> {
    let key = SockKey { pid, pad: 0, sk };
    let mut info = sock_conn(&key, cfg)?;
    mark_sock_tls(&key);
    if info.proto == PROTO_UNKNOWN {
        info.proto = if sc.ret >= 9 && user_starts_http2(sc.buf) {
            PROTO_HTTP2
        } else {
            PROTO_OTHER
        };
        set_proto(&key, info.proto);
    }
    Some(info)
}

/// A connection opened (`role` server or client): remembers it and reports it.
#[inline(always)]
fn on_open(pid_tgid: u64, sk: u64, role: u32, enter_ns: u64) {
    let key = SockKey {
        pid: (pid_tgid >> 32) as u32,
        pad: 0,
        sk,
    };
    let cfg = MOP_CONFIG.load();
    if let Some(info) = track(&key, role, &cfg) {
        emit_conn_event(
            EventKind::ConnOpen,
            &info,
            pid_tgid,
            -1,
            enter_ns,
            now_ns(),
            &cfg,
        );
    }
}

/// Return of `inet_csk_accept`: the accepted socket (NULL on failure).
#[inline(always)]
pub(crate) fn accept_exit(pid_tgid: u64, newsk: u64) {
    if newsk != 0 {
        on_open(pid_tgid, newsk, ROLE_SERVER, now_ns());
    }
}

/// Entry of `inet_stream_connect(sock, ...)` on the kprobe path: saves the socket.
#[inline(always)]
pub(crate) fn connect_enter(pid_tgid: u64, sock: u64) {
    save(
        pid_tgid,
        &KfuncInflight {
            enter_ns: now_ns(),
            sk: sock,
            buf: 0,
            nr_segs: 0,
            skip: 0,
            op: KOP_CONNECT,
            source: SRC_NONE,
        },
    );
}

/// Return of `inet_stream_connect` on the kprobe path.
#[inline(always)]
pub(crate) fn connect_return(pid_tgid: u64, ret: i64) {
    if let Some(inflight) = take(pid_tgid, KOP_CONNECT) {
        connect_exit(pid_tgid, inflight.sk, ret, inflight.enter_ns);
    }
}

/// Return of `inet_stream_connect(sock, ...)`: a started or finished connect opens a client
/// connection (as `connect` returning 0 or `-EINPROGRESS` does on the syscall path).
#[inline(always)]
pub(crate) fn connect_exit(pid_tgid: u64, sock: u64, ret: i64, enter_ns: u64) {
    if ret != 0 && ret != EINPROGRESS {
        return;
    }
    let cfg = MOP_CONFIG.load();
    let Some(sk) = read_kernel::<u64>(sock, cfg.offsets.socket_sk) else {
        bump(Counter::SocketLookupFailed);
        return;
    };
    on_open(pid_tgid, sk, ROLE_CLIENT, enter_ns);
}

/// Entry of `tcp_close(sk, timeout)`: the last reference to the socket is gone.
#[inline(always)]
pub(crate) fn close_enter(pid_tgid: u64, sk: u64) {
    let key = SockKey {
        pid: (pid_tgid >> 32) as u32,
        pad: 0,
        sk,
    };
    // SAFETY: the entry is copied out before it is removed.
    let Some(info) = (unsafe { MOP_SOCK_CONNS.get(&key) }).copied() else {
        return;
    };
    let _ = MOP_SOCK_CONNS.remove(&key);
    let cfg = MOP_CONFIG.load();
    let now = now_ns();
    emit_conn_event(EventKind::ConnClose, &info, pid_tgid, -1, now, now, &cfg);
}
