//! The kprobe capture path: kprobes and kretprobes on the kernel's TCP functions (see
//! `mop_common::kfunc` for the table). Entry probes save what the return probes need in
//! `MOP_KFUNC_INFLIGHT`; both only fetch registers and call the shared logic in `kfuncs.rs`.
//!
//! A kretprobe has a bounded number of instances per function (the kernel's default
//! `maxactive`, twice the CPU count, at least 10): more threads blocked inside one function at
//! once (e.g. thread-per-connection servers waiting in `tcp_recvmsg`) miss their returns.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use mop_common::kfunc::{KOP_RECV, KOP_SEND, KOP_SENDPAGE};

use crate::kfuncs::{
    accept_exit, close_enter, connect_enter, connect_return, current_selected, data_enter,
    data_exit, sendpage_enter,
};

/// The return value of an `int` function.
#[inline(always)]
fn int_ret(ctx: &RetProbeContext) -> i64 {
    i64::from(ctx.ret::<u64>() as i32)
}

/// Entry of `tcp_sendmsg` or `tcp_recvmsg`: both start with `(struct sock *sk, struct msghdr
/// *msg, ...)`.
#[inline(always)]
fn data_probe(ctx: &ProbeContext, op: u32) {
    if let Some(pid_tgid) = current_selected() {
        let (Some(sk), Some(msg)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
            return;
        };
        data_enter(pid_tgid, sk, msg, op);
    }
}

#[inline(always)]
fn data_ret(ctx: &RetProbeContext, op: u32) {
    if let Some(pid_tgid) = current_selected() {
        data_exit(pid_tgid, op, int_ret(ctx));
    }
}

#[kprobe(function = "tcp_sendmsg")]
pub(crate) fn kprobe_tcp_sendmsg(ctx: ProbeContext) -> u32 {
    data_probe(&ctx, KOP_SEND);
    0
}

#[kretprobe(function = "tcp_sendmsg")]
pub(crate) fn kretprobe_tcp_sendmsg(ctx: RetProbeContext) -> u32 {
    data_ret(&ctx, KOP_SEND);
    0
}

#[kprobe(function = "tcp_recvmsg")]
pub(crate) fn kprobe_tcp_recvmsg(ctx: ProbeContext) -> u32 {
    data_probe(&ctx, KOP_RECV);
    0
}

#[kretprobe(function = "tcp_recvmsg")]
pub(crate) fn kretprobe_tcp_recvmsg(ctx: RetProbeContext) -> u32 {
    data_ret(&ctx, KOP_RECV);
    0
}

/// `struct sock *inet_csk_accept(...)`: only the returned socket matters.
#[kretprobe(function = "inet_csk_accept")]
pub(crate) fn kretprobe_inet_csk_accept(ctx: RetProbeContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        accept_exit(pid_tgid, ctx.ret::<u64>());
    }
    0
}

/// `int inet_stream_connect(struct socket *sock, ...)`.
#[kprobe(function = "inet_stream_connect")]
pub(crate) fn kprobe_inet_stream_connect(ctx: ProbeContext) -> u32 {
    if let Some(pid_tgid) = current_selected()
        && let Some(sock) = ctx.arg::<u64>(0)
    {
        connect_enter(pid_tgid, sock);
    }
    0
}

#[kretprobe(function = "inet_stream_connect")]
pub(crate) fn kretprobe_inet_stream_connect(ctx: RetProbeContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        connect_return(pid_tgid, int_ret(&ctx));
    }
    0
}

/// `void tcp_close(struct sock *sk, long timeout)`.
#[kprobe(function = "tcp_close")]
pub(crate) fn kprobe_tcp_close(ctx: ProbeContext) -> u32 {
    if let Some(pid_tgid) = current_selected()
        && let Some(sk) = ctx.arg::<u64>(0)
    {
        close_enter(pid_tgid, sk);
    }
    0
}

/// `int tcp_sendpage(struct sock *sk, ...)` (before 6.5).
#[kprobe(function = "tcp_sendpage")]
pub(crate) fn kprobe_tcp_sendpage(ctx: ProbeContext) -> u32 {
    if let Some(pid_tgid) = current_selected()
        && let Some(sk) = ctx.arg::<u64>(0)
    {
        sendpage_enter(pid_tgid, sk);
    }
    0
}

#[kretprobe(function = "tcp_sendpage")]
pub(crate) fn kretprobe_tcp_sendpage(ctx: RetProbeContext) -> u32 {
    data_ret(&ctx, KOP_SENDPAGE);
    0
}
