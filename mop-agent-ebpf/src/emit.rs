//! Assembling records and copying them into the ring buffer.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_probe_read_user, generated},
};
use mop_common::{
    ConnInfo, Counter, EVENT_HEADER_LEN, EventKind, KernelConfig, MAX_CAPTURE_BYTES, SyscallOp,
    TAIL_BYTES,
    event::{DIR_EGRESS, DIR_INGRESS, DataEventHeader, FLAG_IOV_TRUNCATED, FLAG_SENDFILE},
    maps::PROTO_HTTP2,
};

use crate::maps::{EventBuffer, MOP_EVENTS, MOP_SCRATCH, bump};

/// iovec entries walked to find the tail (bounded loop); more entries set `FLAG_IOV_TRUNCATED`.
const MAX_IOV: u32 = 16;

/// iovec entries the head is copied from.
const HEAD_IOVS: u32 = 3;

const MAX: u32 = MAX_CAPTURE_BYTES as u32;

/// A finished data syscall, as the exit program saw it.
pub(crate) struct DataSyscall {
    pub(crate) op: SyscallOp,
    pub(crate) fd: i32,
    pub(crate) buf: u64,
    pub(crate) len: u64,
    pub(crate) ret: u64,
    pub(crate) enter_ns: u64,
    pub(crate) exit_ns: u64,
    pub(crate) pid_tgid: u64,
    /// `FLAG_*` bits the record carries (e.g. TLS plaintext).
    pub(crate) flags: u32,
}

/// `struct iovec` of the user's address space.
#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// Chooses the ring-buffer notification: wake the reader only when enough is unread.
#[inline(always)]
fn wakeup_flag(cfg: &KernelConfig) -> u64 {
    let unread = MOP_EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if unread >= u64::from(cfg.wakeup_bytes) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Fills the fields every record has.
#[inline(always)]
fn fill_header(
    h: &mut DataEventHeader,
    kind: EventKind,
    conn: &ConnInfo,
    pid_tgid: u64,
    fd: i32,
    enter_ns: u64,
    exit_ns: u64,
) {
    h.kind = kind as u32;
    h.direction = 0;
    h.enter_ns = enter_ns;
    h.exit_ns = exit_ns;
    h.pid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.fd = fd;
    h.flags = 0;
    h.conn_id = conn.conn_id;
    h.addrs = conn.addrs;
    h.role = conn.role;
    h.captured_len = 0;
    h.total_len = 0;
    h.tail_len = 0;
    h.pad = 0;
    h.tail = [0; TAIL_BYTES];
}

/// Writes a payload-less record (connection opened or closed).
#[inline(always)]
pub(crate) fn emit_conn_event(
    kind: EventKind,
    conn: &ConnInfo,
    pid_tgid: u64,
    fd: i32,
    enter_ns: u64,
    exit_ns: u64,
    cfg: &KernelConfig,
) {
    let Some(mut entry) = MOP_EVENTS.reserve::<DataEventHeader>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    // SAFETY: every field is written by fill_header before submit.
    let h = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(h, kind, conn, pid_tgid, fd, enter_ns, exit_ns);
    // Discovery waits on exec reports: never let them sit until the next poll.
    let flags = if matches!(kind, EventKind::ProcExec) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        wakeup_flag(cfg)
    };
    entry.submit(flags);
    bump(Counter::EventsSubmitted);
}

/// Clamps `v` to at most `MAX`, in a form the verifier sees (LLVM may drop a plain `min`
/// whose bound it can prove, leaving the verifier without it).
#[inline(always)]
fn clamp_to_max(v: u64) -> u64 {
    let mut v = v;
    // SAFETY: a compare and a move on one register.
    unsafe {
        core::arch::asm!(
            "if {v} <= {max} goto +1",
            "{v} = {max}",
            v = inout(reg) v,
            max = const MAX_CAPTURE_BYTES,
        );
    }
    v
}

/// `v & mask` that LLVM cannot remove, so the verifier learns the bound.
#[inline(always)]
fn mask_offset(v: u64) -> u64 {
    let mut v = v;
    // SAFETY: an and on one register.
    unsafe {
        core::arch::asm!("{v} &= {mask}", v = inout(reg) v, mask = const MAX_CAPTURE_BYTES - 1);
    }
    v
}

/// Clamps `v` to at most `TAIL_BYTES`, visibly to the verifier.
#[inline(always)]
fn clamp_to_tail(v: u64) -> u64 {
    let mut v = v;
    // SAFETY: a compare and a move on one register.
    unsafe {
        core::arch::asm!(
            "if {v} <= {max} goto +1",
            "{v} = {max}",
            v = inout(reg) v,
            max = const TAIL_BYTES,
        );
    }
    v
}

/// Copies `n` (at most `MAX`) bytes of user memory at `src` to `data[offset..]`.
#[inline(always)]
fn copy_user(data: &mut [u8; MAX_CAPTURE_BYTES * 2], offset: u32, src: u64, n: u32) -> bool {
    let offset = mask_offset(u64::from(offset)) as usize;
    let n = clamp_to_max(u64::from(n)) as u32;
    // SAFETY: offset < MAX and n <= MAX keep the write inside the 2*MAX buffer; the helper
    // checks the user address.
    let ret = unsafe {
        generated::bpf_probe_read_user(
            data.as_mut_ptr().add(offset).cast::<c_void>(),
            n,
            src as *const c_void,
        )
    };
    ret == 0
}

/// Copies the last `n` (at most `TAIL_BYTES`) bytes that end at `end` into the header's tail.
#[inline(always)]
fn copy_tail(h: &mut DataEventHeader, end: u64, n: u64) {
    let n = clamp_to_tail(n) as u32;
    // SAFETY: n <= TAIL_BYTES, the size of the destination; the helper checks the user address.
    let ret = unsafe {
        generated::bpf_probe_read_user(
            h.tail.as_mut_ptr().cast::<c_void>(),
            n,
            (end - u64::from(n)) as *const c_void,
        )
    };
    if ret == 0 {
        h.tail_len = n;
    }
}

/// Copies the head (and tail) of a contiguous user buffer; returns the bytes captured.
#[inline(always)]
fn capture_contiguous(ev: &mut EventBuffer, buf: u64, ret: u64, cap: u32) -> u32 {
    let n = if ret < u64::from(cap) {
        ret as u32
    } else {
        cap
    };
    if !copy_user(&mut ev.data, 0, buf, n) {
        bump(Counter::ReadUserFailed);
        return 0;
    }
    if ret > u64::from(n) {
        copy_tail(&mut ev.header, buf + ret, ret - u64::from(n));
    }
    n
}

/// Reads entry `i` of a user iovec array.
#[inline(always)]
fn read_iov(iov: u64, i: u32) -> Option<Iovec> {
    // SAFETY: the helper checks the user address.
    unsafe { bpf_probe_read_user((iov + u64::from(i) * 16) as *const Iovec) }.ok()
}

/// Gathers the head (and tail) of the first `ret` bytes described by an iovec array.
///
/// The head is copied from the first `HEAD_IOVS` entries (where message heads sit); the tail
/// comes from the entry holding the last byte, found by walking at most `MAX_IOV` entries.
/// Two loops keep the verifier's work small: only the first tracks a precise copy offset.
#[inline(always)]
fn capture_iovec(ev: &mut EventBuffer, iov: u64, iovcnt: u64, ret: u64, cap: u32) -> u32 {
    let mut copied: u32 = 0;
    for i in 0..HEAD_IOVS {
        if u64::from(i) >= iovcnt || u64::from(copied) >= ret || copied >= cap {
            break;
        }
        let Some(v) = read_iov(iov, i) else {
            bump(Counter::ReadUserFailed);
            break;
        };
        let want = core::cmp::min(ret - u64::from(copied), u64::from(cap - copied));
        let n = core::cmp::min(v.len, want);
        if !copy_user(&mut ev.data, copied, v.base, n as u32) {
            bump(Counter::ReadUserFailed);
            break;
        }
        copied = clamp_to_max(u64::from(copied) + clamp_to_max(n)) as u32;
    }
    if ret <= u64::from(copied) {
        return copied;
    }
    let mut consumed: u64 = 0;
    for i in 0..MAX_IOV {
        if u64::from(i) >= iovcnt {
            break;
        }
        let Some(v) = read_iov(iov, i) else {
            break;
        };
        let part = core::cmp::min(v.len, ret - consumed);
        consumed += part;
        if consumed >= ret {
            copy_tail(
                &mut ev.header,
                v.base + part,
                core::cmp::min(ret - u64::from(copied), part),
            );
            return copied;
        }
    }
    ev.header.flags |= FLAG_IOV_TRUNCATED;
    copied
}

/// The iovec array and its length: the arguments of readv/writev, or from the msghdr of
/// recvmsg/sendmsg.
#[inline(always)]
fn iovec_of(sc: &DataSyscall, cfg: &KernelConfig) -> Option<(u64, u64)> {
    if matches!(sc.op, SyscallOp::Readv | SyscallOp::Writev) {
        return Some((sc.buf, sc.len));
    }
    let off = &cfg.offsets;
    // SAFETY: the helper checks the user address.
    unsafe {
        let iov = bpf_probe_read_user((sc.buf + u64::from(off.msghdr_iov)) as *const u64).ok()?;
        let len =
            bpf_probe_read_user((sc.buf + u64::from(off.msghdr_iovlen)) as *const u64).ok()?;
        Some((iov, len))
    }
}

/// Writes a data record for a finished read/write-family syscall on a TCP connection.
#[inline(always)]
pub(crate) fn emit_data(conn: &ConnInfo, sc: &DataSyscall, cfg: &KernelConfig) {
    let Some(ev) = MOP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot belongs to this CPU for the duration of the program.
    let ev = unsafe { &mut *ev };
    fill_header(
        &mut ev.header,
        EventKind::Data,
        conn,
        sc.pid_tgid,
        sc.fd,
        sc.enter_ns,
        sc.exit_ns,
    );
    ev.header.direction = if sc.op.is_ingress() {
        DIR_INGRESS
    } else {
        DIR_EGRESS
    };
    ev.header.total_len = sc.ret;
    ev.header.flags = sc.flags;
    let window = if conn.proto == PROTO_HTTP2 {
        cfg.http2_capture_bytes
    } else {
        cfg.capture_bytes
    };
    let cap = if window > MAX { MAX } else { window };
    let captured = match sc.op {
        SyscallOp::Read | SyscallOp::Write | SyscallOp::Recvfrom | SyscallOp::Sendto => {
            capture_contiguous(ev, sc.buf, sc.ret, cap)
        }
        SyscallOp::Readv | SyscallOp::Writev | SyscallOp::Recvmsg | SyscallOp::Sendmsg => {
            match iovec_of(sc, cfg) {
                Some((iov, iovcnt)) => capture_iovec(ev, iov, iovcnt, sc.ret, cap),
                None => {
                    bump(Counter::ReadUserFailed);
                    0
                }
            }
        }
        _ => {
            ev.header.flags |= FLAG_SENDFILE;
            0
        }
    };
    let captured = clamp_to_max(u64::from(captured)) as u32;
    ev.header.captured_len = captured;
    let len = EVENT_HEADER_LEN + clamp_to_max(u64::from(captured)) as usize;
    // SAFETY: len <= size_of::<EventBuffer>() because captured < 2 * MAX.
    let bytes =
        unsafe { core::slice::from_raw_parts((ev as *const EventBuffer).cast::<u8>(), len) };
    if MOP_EVENTS.output::<[u8]>(bytes, wakeup_flag(cfg)).is_ok() {
        bump(Counter::EventsSubmitted);
    } else {
        bump(Counter::RingbufFull);
    }
}
