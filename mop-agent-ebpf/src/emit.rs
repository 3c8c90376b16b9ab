//! Assembling records and copying them into the ring buffer.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_probe_read_user, generated},
};
use mop_common::{
    ConnInfo, Counter, EVENT_HEADER_LEN, EventKind, KernelConfig, MAX_CAPTURE_BYTES, SyscallOp,
    TAIL_BYTES, TraceCtx,
    event::{
        DIR_EGRESS, DIR_INGRESS, DataEventHeader, FLAG_IOV_TRUNCATED, FLAG_SENDFILE,
        FLAG_STREAM_SEQ, FLAG_TLS,
    },
    maps::PROTO_HTTP2,
};

use crate::{
    maps::{EventBuffer, MOP_EVENTS, MOP_SCRATCH, bump},
    sock::stream_seq,
};

/// iovec entries walked to find the tail (bounded loop); more entries set `FLAG_IOV_TRUNCATED`.
///
/// gRPC's C core writes a frame as many small slices, one iovec each.
const MAX_IOV: u32 = 64;

/// iovec entries the head is copied from.
const HEAD_IOVS: u32 = 64;

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

/// `struct iovec`: a user buffer (the array itself is in user memory for readv/writev and
/// in kernel memory inside an `iov_iter`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Iovec {
    pub(crate) base: u64,
    pub(crate) len: u64,
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
    // Volatile stores: plain ones are merged into a `memset` call, a BPF subprogram that
    // costs the caller a 32-byte stack frame on kernels before 6.x's verifier (the exit
    // program calls the out-of-line `tcpctx` functions, which call this: three frames).
    // SAFETY: the pointers come from references to the fields.
    unsafe {
        core::ptr::write_volatile(&raw mut h.tail_len, 0);
        core::ptr::write_volatile(&raw mut h.seq_end, 0);
        // `tail` sits at offset 112 of an 8-aligned record.
        let tail = (&raw mut h.tail).cast::<u64>();
        for i in 0..TAIL_BYTES / 8 {
            core::ptr::write_volatile(tail.add(i), 0);
        }
    }
}

/// A trace-context record: the header, then the context the kernel gave a request.
#[repr(C)]
struct TraceCtxRecord {
    header: DataEventHeader,
    ctx: TraceCtx,
}

/// Reports the context the kernel gave a request that starts in this syscall (TCP-option
/// propagation); the syscall's data record follows it.
#[inline(always)]
pub(crate) fn emit_trace_ctx(
    conn: &ConnInfo,
    pid_tgid: u64,
    fd: i32,
    direction: u32,
    ctx: &TraceCtx,
    now: u64,
    cfg: &KernelConfig,
) {
    let Some(mut entry) = MOP_EVENTS.reserve::<TraceCtxRecord>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    // SAFETY: every field is written before submit.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(
        &mut rec.header,
        EventKind::TraceCtx,
        conn,
        pid_tgid,
        fd,
        now,
        now,
    );
    rec.header.direction = direction;
    rec.header.captured_len = core::mem::size_of::<TraceCtx>() as u32;
    rec.header.total_len = core::mem::size_of::<TraceCtx>() as u64;
    rec.ctx = *ctx;
    entry.submit(wakeup_flag(cfg));
    bump(Counter::EventsSubmitted);
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
    entry.submit(wakeup_flag(cfg));
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

/// Longest exec'd path reported (longer ones are cut).
pub(crate) const EXEC_PATH_BYTES: usize = 256;

/// An exec report: the header and the path the process exec'd.
#[repr(C)]
struct ExecRecord {
    header: DataEventHeader,
    path: [u8; EXEC_PATH_BYTES],
}

/// Reports an `execve` with the exec'd path (read from kernel memory at `filename`), so that
/// discovery can decide even when the process is gone before it reads `/proc`.
#[inline(always)]
pub(crate) fn emit_exec(pid_tgid: u64, filename: *const u8, now: u64) {
    let Some(mut entry) = MOP_EVENTS.reserve::<ExecRecord>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    // SAFETY: every header field is written by fill_header; the path bytes after
    // `captured_len` are never read.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    let none = ConnInfo {
        conn_id: 0,
        addrs: mop_common::ConnAddrs::default(),
        kind: 0,
        role: 0,
        proto: 0,
        flags: 0,
    };
    fill_header(
        &mut rec.header,
        EventKind::ProcExec,
        &none,
        pid_tgid,
        -1,
        now,
        now,
    );
    let len = if filename.is_null() {
        0
    } else {
        // SAFETY: the helper checks the kernel address and writes at most the buffer's size.
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(filename, &mut rec.path) }
            .map_or(0, |s| s.len())
    };
    rec.header.captured_len = (len & (EXEC_PATH_BYTES - 1)) as u32;
    rec.header.total_len = rec.header.captured_len.into();
    // Discovery waits on exec reports: never let them sit until the next poll.
    entry.submit(u64::from(BPF_RB_FORCE_WAKEUP));
    bump(Counter::EventsSubmitted);
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
pub(crate) fn capture_contiguous(ev: &mut EventBuffer, buf: u64, ret: u64, cap: u32) -> u32 {
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

/// Reads entry `i` of an iovec array in user memory, or in kernel memory when `KERNEL`.
#[inline(always)]
pub(crate) fn read_iov<const KERNEL: bool>(iov: u64, i: u32) -> Option<Iovec> {
    let at = (iov + u64::from(i) * 16) as *const Iovec;
    // SAFETY: the helpers check the address.
    unsafe {
        if KERNEL {
            aya_ebpf::helpers::bpf_probe_read_kernel(at)
        } else {
            bpf_probe_read_user(at)
        }
    }
    .ok()
}

/// Entry `i` of an iovec array whose first `skip` bytes were consumed already (an
/// `iov_iter`'s offset into its first entry; always 0 for user arrays).
#[inline(always)]
fn iov_entry<const KERNEL: bool>(iov: u64, i: u32, skip: u64) -> Option<Iovec> {
    let mut v = read_iov::<KERNEL>(iov, i)?;
    if KERNEL && i == 0 && skip != 0 {
        let skip = core::cmp::min(skip, v.len);
        v.base += skip;
        v.len -= skip;
    }
    Some(v)
}

/// Gathers the head (and tail) of the first `ret` bytes described by an iovec array (in
/// kernel memory when `KERNEL`, past `skip` bytes of its first entry).
///
/// The head is copied from the first `HEAD_IOVS` entries (where message heads sit); the tail
/// comes from the entry holding the last byte, found by walking at most `MAX_IOV` entries.
/// Two loops keep the verifier's work small: only the first tracks a precise copy offset.
#[inline(always)]
pub(crate) fn capture_iovec<const KERNEL: bool>(
    ev: &mut EventBuffer,
    iov: u64,
    iovcnt: u64,
    skip: u64,
    ret: u64,
    cap: u32,
) -> u32 {
    // The running copy offset lives in the record (map memory) and is reloaded each turn: the
    // verifier then knows only its bounds, not its value, so it can prune the loop's states
    // (a register would make every iovec count a separate path).
    let cursor: *mut u32 = &raw mut ev.header.captured_len;
    // SAFETY: `cursor` points into the per-CPU record this program owns.
    unsafe { core::ptr::write_volatile(cursor, 0) };
    for i in 0..HEAD_IOVS {
        // SAFETY: as above.
        let copied = clamp_to_max(u64::from(unsafe { core::ptr::read_volatile(cursor) })) as u32;
        if u64::from(i) >= iovcnt || u64::from(copied) >= ret || copied >= cap {
            break;
        }
        let Some(v) = iov_entry::<KERNEL>(iov, i, skip) else {
            bump(Counter::ReadUserFailed);
            break;
        };
        let want = core::cmp::min(ret - u64::from(copied), u64::from(cap - copied));
        let n = core::cmp::min(v.len, want);
        if !copy_user(&mut ev.data, copied, v.base, n as u32) {
            bump(Counter::ReadUserFailed);
            break;
        }
        let next = clamp_to_max(u64::from(copied) + clamp_to_max(n)) as u32;
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(cursor, next) };
    }
    // SAFETY: as above.
    let copied = clamp_to_max(u64::from(unsafe { core::ptr::read_volatile(cursor) })) as u32;
    if ret <= u64::from(copied) {
        return copied;
    }
    let mut consumed: u64 = 0;
    for i in 0..MAX_IOV {
        if u64::from(i) >= iovcnt {
            break;
        }
        let Some(v) = iov_entry::<KERNEL>(iov, i, skip) else {
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
    let Some((ev, cap)) = begin_data(conn, sc, cfg) else {
        return;
    };
    let captured = match sc.op {
        SyscallOp::Read | SyscallOp::Write | SyscallOp::Recvfrom | SyscallOp::Sendto => {
            capture_contiguous(ev, sc.buf, sc.ret, cap)
        }
        SyscallOp::Readv | SyscallOp::Writev | SyscallOp::Recvmsg | SyscallOp::Sendmsg => {
            match iovec_of(sc, cfg) {
                Some((iov, iovcnt)) => capture_iovec::<false>(ev, iov, iovcnt, 0, sc.ret, cap),
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
    submit_data(ev, captured, cfg);
}

/// Fills the header of a data record for `sc` on `conn` in the per-CPU scratch record;
/// returns the record and the payload window. The caller copies the payload with the
/// `capture_*` function its hook can use, then calls [`submit_data`]. `sc.op` only decides the
/// direction; the kernel-function paths pass `Read` or `Write` and `fd = -1`.
#[inline(always)]
pub(crate) fn begin_data(
    conn: &ConnInfo,
    sc: &DataSyscall,
    cfg: &KernelConfig,
) -> Option<(&'static mut EventBuffer, u32)> {
    let ev = MOP_SCRATCH.get_ptr_mut(0)?;
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
    let ingress = sc.op.is_ingress();
    ev.header.direction = if ingress { DIR_INGRESS } else { DIR_EGRESS };
    ev.header.total_len = sc.ret;
    ev.header.flags = sc.flags;
    // Plaintext from the TLS library has no place in the TCP stream.
    if sc.flags & FLAG_TLS == 0
        && let Some(seq) = stream_seq(conn.conn_id, ingress, &cfg.offsets)
    {
        ev.header.seq_end = seq;
        ev.header.flags |= FLAG_STREAM_SEQ;
    }
    let window = if conn.proto == PROTO_HTTP2 {
        cfg.http2_capture_bytes
    } else {
        cfg.capture_bytes
    };
    Some((ev, if window > MAX { MAX } else { window }))
}

/// Sends the record [`begin_data`] started, with `captured` payload bytes.
#[inline(always)]
pub(crate) fn submit_data(ev: &mut EventBuffer, captured: u32, cfg: &KernelConfig) {
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
