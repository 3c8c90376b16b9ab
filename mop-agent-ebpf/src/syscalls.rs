//! The syscall capture path: `sys_enter` saves the arguments of the syscalls that matter for
//! selected processes, `sys_exit` turns their results into records.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use mop_common::{
    ConnInfo, ConnKey, Counter, EventKind, InflightSyscall, KernelConfig, SyscallOp,
    event::{ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN},
    maps::{
        CONN_FLAG_TLS, CONN_OTHER, CONN_TCP, FLAG_TCP_CONTEXT, FLAG_WATCH_EXEC, INFLIGHT_IN_TLS,
        PID_PENDING, PROTO_HTTP2, PROTO_OTHER, PROTO_UNKNOWN,
    },
    ops::SYSCALL_TABLE_LEN,
};

use crate::{
    emit::{DataSyscall, emit_conn_event, emit_data, emit_exec},
    maps::{MOP_CONFIG, MOP_CONNS, MOP_INFLIGHT, MOP_PIDS, MOP_SYSCALL_OPS, bump},
    sock::{FdKind, classify_fd},
};

/// `-EINPROGRESS`: a non-blocking connect that has started; the local address is bound.
const EINPROGRESS: i64 = -115;

/// True when the current process is selected for capture.
#[inline(always)]
pub(crate) fn selected(pid_tgid: u64) -> bool {
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is only tested for presence.
    unsafe { MOP_PIDS.get(&pid) }.is_some()
}

/// Reads syscall argument `n` from the user `pt_regs` at `regs`.
#[inline(always)]
fn syscall_arg(regs: *const u8, cfg: &KernelConfig, n: usize) -> u64 {
    let offset = cfg.regs_arg_offsets[n] as usize;
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel(regs.wrapping_add(offset).cast::<u64>()) }.unwrap_or(0)
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub(crate) fn mop_sys_enter(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !selected(pid_tgid) {
        return 0;
    }
    let nr: i64 = ctx.arg(1);
    if nr < 0 || nr >= i64::from(SYSCALL_TABLE_LEN) {
        return 0;
    }
    let op = match MOP_SYSCALL_OPS.get(nr as u32) {
        Some(op) => SyscallOp::from_u8(*op),
        None => return 0,
    };
    if op == SyscallOp::Ignore {
        return 0;
    }
    let cfg = MOP_CONFIG.load();
    let regs: *const u8 = ctx.arg(0);
    let fd = syscall_arg(regs, &cfg, 0) as i32;
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if op == SyscallOp::Close {
        on_close(pid_tgid, fd, now, &cfg);
        return 0;
    }
    let (buf, len) = if op == SyscallOp::Sendfile {
        (0, syscall_arg(regs, &cfg, 3))
    } else {
        (syscall_arg(regs, &cfg, 1), syscall_arg(regs, &cfg, 2))
    };
    // A socket syscall inside a TLS library call: its bytes are ciphertext, and it tells which
    // socket the `SSL*` uses.
    let in_tls = (op.is_ingress() || op.is_egress()) && crate::tls::note_socket(pid_tgid, fd);
    // The context of a request must wait for the socket before its first packet leaves.
    if cfg.flags & FLAG_TCP_CONTEXT != 0 && op.is_egress() {
        crate::tcpctx::on_egress_enter(pid_tgid, fd, now);
    }
    let inflight = InflightSyscall {
        enter_ns: now,
        buf,
        len,
        fd,
        op: op as u32 | if in_tls { INFLIGHT_IN_TLS } else { 0 },
    };
    if MOP_INFLIGHT.insert(&pid_tgid, &inflight, 0).is_err() {
        bump(Counter::InflightFull);
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub(crate) fn mop_sys_exit(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !selected(pid_tgid) {
        return 0;
    }
    // SAFETY: the entry is copied out before it is removed.
    let Some(inflight) = (unsafe { MOP_INFLIGHT.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = MOP_INFLIGHT.remove(&pid_tgid);
    let ret: i64 = ctx.arg(1);
    let op = SyscallOp::from_u8(inflight.op as u8);
    let in_tls = inflight.op & INFLIGHT_IN_TLS != 0;
    let cfg = MOP_CONFIG.load();
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    match op {
        SyscallOp::Accept if ret >= 0 => {
            on_open(
                pid_tgid,
                ret as i32,
                ROLE_SERVER,
                inflight.enter_ns,
                now,
                &cfg,
            );
        }
        SyscallOp::Connect if ret == 0 || ret == EINPROGRESS => {
            on_open(
                pid_tgid,
                inflight.fd,
                ROLE_CLIENT,
                inflight.enter_ns,
                now,
                &cfg,
            );
        }
        _ if ret > 0 && (op.is_ingress() || op.is_egress()) => {
            // Before the data record, which the request's context must precede.
            if cfg.flags & FLAG_TCP_CONTEXT != 0 && op.is_ingress() {
                crate::tcpctx::on_ingress_exit(pid_tgid, inflight.fd, now);
            }
            let sc = DataSyscall {
                op,
                fd: inflight.fd,
                buf: inflight.buf,
                len: inflight.len,
                ret: ret as u64,
                enter_ns: inflight.enter_ns,
                exit_ns: now,
                pid_tgid,
                flags: 0,
            };
            on_data(&sc, &cfg, in_tls);
        }
        _ => {}
    }
    0
}

/// Classifies `fd` and remembers the result; `None` when it is not a TCP socket.
#[inline(always)]
fn track(key: &ConnKey, role: u32, cfg: &KernelConfig) -> Option<ConnInfo> {
    let kind = match classify_fd(key.fd, &cfg.offsets) {
        Ok(kind) => kind,
        Err(_) => {
            bump(Counter::SocketLookupFailed);
            return None;
        }
    };
    let info = match kind {
        FdKind::Tcp(sk, addrs) => ConnInfo {
            conn_id: sk,
            addrs,
            kind: CONN_TCP,
            role,
            proto: PROTO_UNKNOWN,
            flags: 0,
        },
        FdKind::Other => ConnInfo {
            conn_id: 0,
            addrs: mop_common::ConnAddrs::default(),
            kind: CONN_OTHER,
            role: ROLE_UNKNOWN,
            proto: PROTO_OTHER,
            flags: 0,
        },
    };
    let _ = MOP_CONNS.insert(key, &info, 0);
    if info.kind == CONN_TCP {
        bump(Counter::ConnsTracked);
        Some(info)
    } else {
        None
    }
}

#[inline(always)]
fn on_open(pid_tgid: u64, fd: i32, role: u32, enter_ns: u64, exit_ns: u64, cfg: &KernelConfig) {
    let key = ConnKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    if let Some(info) = track(&key, role, cfg) {
        emit_conn_event(
            EventKind::ConnOpen,
            &info,
            pid_tgid,
            fd,
            enter_ns,
            exit_ns,
            cfg,
        );
    }
}

/// The TCP connection behind `key`, classifying the fd on first sight; `None` for anything
/// that is not a TCP socket.
#[inline(always)]
pub(crate) fn tcp_conn(key: &ConnKey, cfg: &KernelConfig) -> Option<ConnInfo> {
    // SAFETY: the entry is copied out at once.
    match unsafe { MOP_CONNS.get(key) }.copied() {
        Some(info) if info.kind == CONN_TCP => Some(info),
        Some(_) => None,
        None => track(key, ROLE_UNKNOWN, cfg),
    }
}

/// Marks a connection as carrying TLS (its syscall bytes are never reported again).
#[inline(always)]
pub(crate) fn mark_tls(key: &ConnKey) {
    if let Some(entry) = MOP_CONNS.get_ptr_mut(key) {
        // SAFETY: LRU map values stay valid for the program's run; setting a bit is idempotent.
        unsafe { (*entry).flags |= CONN_FLAG_TLS };
    }
}

#[inline(always)]
fn on_data(sc: &DataSyscall, cfg: &KernelConfig, in_tls: bool) {
    let key = ConnKey {
        pid: (sc.pid_tgid >> 32) as u32,
        fd: sc.fd,
    };
    let Some(mut info) = tcp_conn(&key, cfg) else {
        return;
    };
    if in_tls || info.flags & CONN_FLAG_TLS != 0 {
        if info.flags & CONN_FLAG_TLS == 0 {
            mark_tls(&key);
        }
        return;
    }
    prepare_window(&key, &mut info, sc);
    emit_data(&info, sc, cfg);
}

/// Decides, on a connection's first data, whether it speaks HTTP/2 (and needs the larger
/// capture window), and remembers the decision.
#[inline(always)]
pub(crate) fn prepare_window(key: &ConnKey, info: &mut ConnInfo, sc: &DataSyscall) {
    if info.proto == PROTO_UNKNOWN {
        info.proto = if starts_http2_preface(sc) {
            PROTO_HTTP2
        } else {
            PROTO_OTHER
        };
        if let Some(entry) = MOP_CONNS.get_ptr_mut(key) {
            // SAFETY: LRU map values stay valid for the program's run; a concurrent update
            // of the same field writes the same decision.
            unsafe { (*entry).proto = info.proto };
        }
    }
}

#[inline(always)]
fn on_close(pid_tgid: u64, fd: i32, now: u64, cfg: &KernelConfig) {
    let key = ConnKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    // SAFETY: the entry is copied out before it is removed.
    let Some(info) = (unsafe { MOP_CONNS.get(&key) }).copied() else {
        return;
    };
    let _ = MOP_CONNS.remove(&key);
    if info.kind == CONN_TCP {
        emit_conn_event(EventKind::ConnClose, &info, pid_tgid, fd, now, now, cfg);
    }
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub(crate) fn mop_sched_exec(ctx: RawTracePointContext) -> i32 {
    let cfg = MOP_CONFIG.load();
    if cfg.flags & FLAG_WATCH_EXEC == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // A new program: capture it until discovery decides, even if its old image was selected.
    let _ = MOP_PIDS.insert(&pid, &PID_PENDING, 0);
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let bprm: *const u8 = ctx.arg(2);
    // SAFETY: bpf_probe_read_kernel checks the address.
    let filename: *const u8 = unsafe {
        bpf_probe_read_kernel(
            bprm.wrapping_add(cfg.offsets.binprm_filename as usize)
                .cast::<*const u8>(),
        )
    }
    .unwrap_or(core::ptr::null());
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    emit_exec(pid_tgid, filename, now);
    0
}

/// The first four bytes of the HTTP/2 client preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_START: [u8; 4] = *b"PRI ";

/// HTTP/2 frame type of SETTINGS.
const FRAME_SETTINGS: u8 = 4;

/// True when the first bytes the syscall moved start an HTTP/2 connection: the client
/// preface, or the SETTINGS frame a server sends first (often before it reads the preface).
#[inline(always)]
fn starts_http2_preface(sc: &DataSyscall) -> bool {
    if sc.ret < 9 {
        return false;
    }
    let first = match sc.op {
        SyscallOp::Read | SyscallOp::Write | SyscallOp::Recvfrom | SyscallOp::Sendto => sc.buf,
        SyscallOp::Readv | SyscallOp::Writev => first_iov_base(sc.buf),
        SyscallOp::Recvmsg | SyscallOp::Sendmsg => {
            let cfg = MOP_CONFIG.load();
            // SAFETY: the helper checks the user address.
            let iov = unsafe {
                aya_ebpf::helpers::bpf_probe_read_user(
                    (sc.buf + u64::from(cfg.offsets.msghdr_iov)) as *const u64,
                )
            }
            .unwrap_or(0);
            first_iov_base(iov)
        }
        _ => 0,
    };
    if first == 0 {
        return false;
    }
    // SAFETY: the helper checks the user address.
    let Ok(h) = (unsafe { aya_ebpf::helpers::bpf_probe_read_user(first as *const [u8; 9]) }) else {
        return false;
    };
    is_http2_start(&h)
}

/// True when the first nine bytes of a connection's data are the start of the HTTP/2 client
/// preface or a server's first SETTINGS frame.
#[inline(always)]
pub(crate) fn is_http2_start(h: &[u8; 9]) -> bool {
    if h[..4] == PREFACE_START {
        return true;
    }
    // A SETTINGS frame on stream 0 without ACK, with a whole number of 6-byte settings.
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    h[3] == FRAME_SETTINGS && h[4] == 0 && h[5..9] == [0, 0, 0, 0] && len % 6 == 0 && len <= 6 * 16
}

/// The base address of the first entry of a user iovec array (0 when unreadable).
#[inline(always)]
fn first_iov_base(iov: u64) -> u64 {
    if iov == 0 {
        return 0;
    }
    // SAFETY: the helper checks the user address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(iov as *const u64) }.unwrap_or(0)
}
