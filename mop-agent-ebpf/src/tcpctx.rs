//! Trace context carried in a TCP option (`ebpf.context_propagation: tcp`).
//!
//! On a connection that is not HTTP/2, a request starts where the bytes change direction
//! (see `ConnInfo::flags`). The kernel gives each request its ids when it starts, so they can
//! travel with it:
//!
//! - client end, at the entry of the write that starts a request: a new span id, and the trace
//!   of the request the thread is serving (`MOP_THREAD_CTX`) or a new trace. The context waits
//!   in `MOP_FLOW_OUT` until `mop_sockops` writes it into the socket's next packet as a TCP
//!   option (kind 254, ExID, trace id, span id) and forgets it;
//! - server end: `mop_sockops` parses an incoming option into `MOP_FLOW_IN`; the read that
//!   starts a request takes it as the request's parent, picks the request's span id and
//!   remembers the context for the thread until the thread starts its response.
//!
//! Every context given out is reported in a `TraceCtx` record before the syscall's data, so
//! the agent's spans carry exactly these ids.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_HDR_OPT_LEN_CB,
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB, BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_WRITE_HDR_OPT_CB,
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG,
    },
    helpers::{
        bpf_get_prandom_u32,
        generated::{bpf_load_hdr_opt, bpf_reserve_hdr_opt, bpf_store_hdr_opt},
    },
    macros::sock_ops,
    programs::SockOpsContext,
};
use mop_common::{
    AF_INET, AF_INET6, ConnAddrs, ConnInfo, ConnKey, TraceCtx,
    event::{DIR_EGRESS, DIR_INGRESS, ROLE_CLIENT, ROLE_SERVER},
    maps::{
        CONN_FLAG_LAST_EGRESS, CONN_FLAG_SEEN_DATA, CONN_FLAG_SERVER_END, CONN_TCP, PROTO_HTTP2,
        TCP_OPT_EXID, TCP_OPT_KIND, TCP_OPT_LEN,
    },
};

use crate::{
    emit::emit_trace_ctx,
    maps::{MOP_CONFIG, MOP_CONNS, MOP_FLOW_IN, MOP_FLOW_OUT, MOP_THREAD_CTX},
    syscalls::tcp_conn,
};

/// True when the process is the server end of the connection: it accepted it, or (opened
/// before capture began) its first data was a read.
#[inline(always)]
fn server_end(info: &ConnInfo, ingress: bool) -> bool {
    match info.role {
        ROLE_SERVER => true,
        ROLE_CLIENT => false,
        _ if info.flags & CONN_FLAG_SEEN_DATA != 0 => info.flags & CONN_FLAG_SERVER_END != 0,
        _ => ingress,
    }
}

/// True when data moving in direction `egress` starts a new message (the first data, or a
/// change of direction).
#[inline(always)]
fn direction_flips(info: &ConnInfo, egress: bool) -> bool {
    info.flags & CONN_FLAG_SEEN_DATA == 0 || (info.flags & CONN_FLAG_LAST_EGRESS != 0) != egress
}

/// Records the direction of the data just seen (and which end the process is).
#[inline(always)]
fn note_direction(key: &ConnKey, info: &ConnInfo, egress: bool, server: bool) {
    let mut flags = (info.flags | CONN_FLAG_SEEN_DATA) & !CONN_FLAG_LAST_EGRESS;
    if egress {
        flags |= CONN_FLAG_LAST_EGRESS;
    }
    if server {
        flags |= CONN_FLAG_SERVER_END;
    }
    if flags == info.flags {
        return;
    }
    if let Some(entry) = MOP_CONNS.get_ptr_mut(key) {
        // SAFETY: LRU map values stay valid for the program's run; only this thread moves
        // data on the connection at a time in the protocols this serves (HTTP/1).
        unsafe { (*entry).flags = flags };
    }
}

/// Eight random bytes, never all zero (a zero id means "none").
#[inline(always)]
fn random_id8() -> [u8; 8] {
    // SAFETY: helpers without arguments.
    let (hi, lo) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32() | 1) };
    ((u64::from(hi) << 32) | u64::from(lo)).to_ne_bytes()
}

/// A new random trace id.
#[inline(always)]
fn random_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random_id8());
    id[8..].copy_from_slice(&random_id8());
    id
}

/// At the entry of a write on a TCP socket of a selected process: a request that starts here
/// gets its context, waiting for the socket's next packet; a response that starts here ends
/// the thread's current request.
// Out of line: the exit program's stack is nearly full with the data path inlined.
#[inline(never)]
pub(crate) fn on_egress_enter(pid_tgid: u64, fd: i32, now: u64) {
    let cfg = MOP_CONFIG.load();
    let key = ConnKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    let Some(info) = tcp_conn(&key, &cfg) else {
        return;
    };
    if info.proto == PROTO_HTTP2 {
        return;
    }
    let server = server_end(&info, false);
    if direction_flips(&info, true) {
        if server {
            let _ = MOP_THREAD_CTX.remove(&pid_tgid);
        } else {
            // SAFETY: the entry is copied out at once.
            let serving = unsafe { MOP_THREAD_CTX.get(&pid_tgid) }.copied();
            let ctx = match serving {
                Some(parent) => TraceCtx {
                    trace_id: parent.trace_id,
                    span_id: random_id8(),
                    parent_span_id: parent.span_id,
                },
                None => TraceCtx {
                    trace_id: random_trace_id(),
                    span_id: random_id8(),
                    parent_span_id: [0; 8],
                },
            };
            let _ = MOP_FLOW_OUT.insert(&info.addrs, &ctx, 0);
            emit_trace_ctx(&info, pid_tgid, fd, DIR_EGRESS, &ctx, now, &cfg);
        }
    }
    note_direction(&key, &info, true, server);
}

/// At the exit of a read that returned data on a TCP socket of a selected process: a request
/// that starts here joins the caller's context from the TCP option (or starts a trace), and
/// the thread serves it until it starts the response.
#[inline(never)]
pub(crate) fn on_ingress_exit(pid_tgid: u64, fd: i32, now: u64) {
    let cfg = MOP_CONFIG.load();
    let key = ConnKey {
        pid: (pid_tgid >> 32) as u32,
        fd,
    };
    // Lookup only: connections are tracked at accept/connect (or by the data path right
    // after this). Tracking here would inline a `memset` call, a third stack frame under the
    // exit program that 5.10 and 6.1 reject (combined stack over 512 bytes).
    // SAFETY: the entry is copied out at once.
    let Some(info) = unsafe { MOP_CONNS.get(&key) }.copied() else {
        return;
    };
    if info.kind != CONN_TCP {
        return;
    }
    if info.proto == PROTO_HTTP2 {
        return;
    }
    let server = server_end(&info, true);
    if server && direction_flips(&info, false) {
        // SAFETY: the entry is copied out before it is removed.
        let caller = unsafe { MOP_FLOW_IN.get(&info.addrs) }.copied();
        let ctx = match caller {
            Some(caller) => {
                let _ = MOP_FLOW_IN.remove(&info.addrs);
                TraceCtx {
                    trace_id: caller.trace_id,
                    span_id: random_id8(),
                    parent_span_id: caller.span_id,
                }
            }
            None => TraceCtx {
                trace_id: random_trace_id(),
                span_id: random_id8(),
                parent_span_id: [0; 8],
            },
        };
        let _ = MOP_THREAD_CTX.insert(&pid_tgid, &ctx, 0);
        emit_trace_ctx(&info, pid_tgid, fd, DIR_INGRESS, &ctx, now, &cfg);
    }
    note_direction(&key, &info, false, server);
}

/// Reads a `u32` field of the sock_ops context with a single 4-byte load (the only width the
/// verifier allows for these fields).
#[inline(always)]
fn ctx_u32(field: *const u32) -> u32 {
    // SAFETY: `field` points into the program's context.
    unsafe { core::ptr::read_volatile(field) }
}

/// The socket's addresses as the syscall path sees them (see `sock.rs`): the key of the flow
/// maps.
#[inline(always)]
fn flow_key(ctx: &SockOpsContext) -> Option<ConnAddrs> {
    let ops = ctx.ops;
    let family = ctx.family() as u16;
    let mut key = ConnAddrs {
        family,
        ..ConnAddrs::default()
    };
    // SAFETY (all field reads): `ops` is the program's context pointer.
    if family == AF_INET {
        key.local_addr[..4].copy_from_slice(&ctx_u32(unsafe { &(*ops).local_ip4 }).to_ne_bytes());
        key.remote_addr[..4].copy_from_slice(&ctx_u32(unsafe { &(*ops).remote_ip4 }).to_ne_bytes());
    } else if family == AF_INET6 {
        for i in 0..4 {
            let local = ctx_u32(unsafe { &(*ops).local_ip6[i] }).to_ne_bytes();
            let remote = ctx_u32(unsafe { &(*ops).remote_ip6[i] }).to_ne_bytes();
            key.local_addr[i * 4..i * 4 + 4].copy_from_slice(&local);
            key.remote_addr[i * 4..i * 4 + 4].copy_from_slice(&remote);
        }
    } else {
        return None;
    }
    key.local_port = ctx_u32(unsafe { &(*ops).local_port }) as u16;
    // The remote port is in network order; kernels put it in the upper half of the field
    // (historical layout) or, after a fix, in the lower half.
    let remote = ctx_u32(unsafe { &(*ops).remote_port });
    let be = if remote & 0xffff == 0 {
        remote >> 16
    } else {
        remote
    };
    key.remote_port = u16::from_be(be as u16);
    Some(key)
}

/// The sock_ops program on the cgroup v2 root: asks for the header-option callbacks on every
/// new TCP connection, writes a waiting context into the next packet, and parses contexts
/// that arrive.
#[sock_ops]
pub(crate) fn mop_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            let flags = ctx.cb_flags()
                | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG
                | BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG;
            let _ = ctx.set_cb_flags(flags as i32);
        }
        BPF_SOCK_OPS_HDR_OPT_LEN_CB => {
            if let Some(key) = flow_key(&ctx) {
                // SAFETY: only tested for presence.
                if unsafe { MOP_FLOW_OUT.get(&key) }.is_some() {
                    // SAFETY: called from HDR_OPT_LEN_CB with the program's context; a lack of
                    // room (-ENOSPC) leaves the context for the next packet.
                    let _ = unsafe { bpf_reserve_hdr_opt(ctx.ops, u32::from(TCP_OPT_LEN), 0) };
                }
            }
        }
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB => write_option(&ctx),
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB => parse_option(&ctx),
        _ => {}
    }
    1
}

/// Writes the socket's waiting context into this packet and forgets it.
#[inline(always)]
fn write_option(ctx: &SockOpsContext) {
    let Some(key) = flow_key(ctx) else {
        return;
    };
    // SAFETY: the entry is copied out at once.
    let Some(tc) = (unsafe { MOP_FLOW_OUT.get(&key) }).copied() else {
        return;
    };
    let mut opt = [0u8; TCP_OPT_LEN as usize];
    opt[0] = TCP_OPT_KIND;
    opt[1] = TCP_OPT_LEN;
    opt[2..4].copy_from_slice(&TCP_OPT_EXID.to_be_bytes());
    opt[4..20].copy_from_slice(&tc.trace_id);
    opt[20..28].copy_from_slice(&tc.span_id);
    // SAFETY: called from WRITE_HDR_OPT_CB with the program's context and a stack buffer of
    // the stated length.
    let stored =
        unsafe { bpf_store_hdr_opt(ctx.ops, opt.as_ptr().cast(), u32::from(TCP_OPT_LEN), 0) };
    if stored == 0 {
        let _ = MOP_FLOW_OUT.remove(&key);
    }
}

/// Remembers the context of an incoming packet's option for the read that starts the request.
#[inline(always)]
fn parse_option(ctx: &SockOpsContext) {
    let mut opt = [0u8; TCP_OPT_LEN as usize];
    // Search by kind 254 and the 2-byte ExID: kind-length 4 says how long the magic is.
    opt[0] = TCP_OPT_KIND;
    opt[1] = 4;
    opt[2..4].copy_from_slice(&TCP_OPT_EXID.to_be_bytes());
    // SAFETY: called from PARSE_HDR_OPT_CB with the program's context and a stack buffer of
    // the stated length.
    let found =
        unsafe { bpf_load_hdr_opt(ctx.ops, opt.as_mut_ptr().cast(), u32::from(TCP_OPT_LEN), 0) };
    if found != i64::from(TCP_OPT_LEN) || opt[1] != TCP_OPT_LEN {
        return;
    }
    let Some(key) = flow_key(ctx) else {
        return;
    };
    let mut caller = TraceCtx::default();
    caller.trace_id.copy_from_slice(&opt[4..20]);
    caller.span_id.copy_from_slice(&opt[20..28]);
    let _ = MOP_FLOW_IN.insert(&key, &caller, 0);
}
