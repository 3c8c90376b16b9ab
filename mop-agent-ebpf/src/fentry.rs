//! The fentry/fexit capture path: BPF trampolines on the kernel's TCP functions (see
//! `mop_common::kfunc` for the table). Each program only fetches its arguments and calls the
//! shared logic in `kfuncs.rs`.
//!
//! fexit programs read the return value from the context slot after the last parameter
//! rather than with `bpf_get_func_ret` (5.17+), so they load on 5.10 too; a function whose
//! parameter count changed across kernels has one program per count (`_p<N>` suffix) and the
//! loader picks the one matching the running kernel's BTF.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use mop_common::kfunc::{KOP_RECV, KOP_SEND, KOP_SENDPAGE};

use crate::kfuncs::{
    accept_exit, close_enter, connect_exit, current_selected, data_enter, data_exit, sendpage_enter,
};

/// The return value of an `int` function: the slot after its `params` arguments.
#[inline(always)]
fn int_ret(ctx: &FExitContext, params: usize) -> i64 {
    i64::from(ctx.arg::<u64>(params) as i32)
}

/// `int tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)`.
#[fentry(function = "tcp_sendmsg")]
pub(crate) fn fentry_tcp_sendmsg(ctx: FEntryContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        data_enter(pid_tgid, ctx.arg(0), ctx.arg(1), KOP_SEND);
    }
    0
}

#[fexit(function = "tcp_sendmsg")]
pub(crate) fn fexit_tcp_sendmsg(ctx: FExitContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        data_exit(pid_tgid, KOP_SEND, int_ret(&ctx, 3));
    }
    0
}

/// `int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, int flags,
/// int *addr_len)` (5.19+; before, `int nonblock` came before `flags`).
#[fentry(function = "tcp_recvmsg")]
pub(crate) fn fentry_tcp_recvmsg(ctx: FEntryContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        data_enter(pid_tgid, ctx.arg(0), ctx.arg(1), KOP_RECV);
    }
    0
}

#[fexit(function = "tcp_recvmsg")]
pub(crate) fn fexit_tcp_recvmsg(ctx: FExitContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        data_exit(pid_tgid, KOP_RECV, int_ret(&ctx, 5));
    }
    0
}

/// `int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, int flags)` (6.16+).
#[fexit(function = "tcp_recvmsg")]
pub(crate) fn fexit_tcp_recvmsg_p4(ctx: FExitContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        data_exit(pid_tgid, KOP_RECV, int_ret(&ctx, 4));
    }
    0
}

#[fexit(function = "tcp_recvmsg")]
pub(crate) fn fexit_tcp_recvmsg_p6(ctx: FExitContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        data_exit(pid_tgid, KOP_RECV, int_ret(&ctx, 6));
    }
    0
}

/// `struct sock *inet_csk_accept(struct sock *sk, struct proto_accept_arg *arg)` (6.10+;
/// before, `int flags, int *err, bool kern`).
#[fexit(function = "inet_csk_accept")]
pub(crate) fn fexit_inet_csk_accept(ctx: FExitContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        accept_exit(pid_tgid, ctx.arg(2));
    }
    0
}

#[fexit(function = "inet_csk_accept")]
pub(crate) fn fexit_inet_csk_accept_p4(ctx: FExitContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        accept_exit(pid_tgid, ctx.arg(4));
    }
    0
}

/// `int inet_stream_connect(struct socket *sock, struct sockaddr *uaddr, int addr_len,
/// int flags)`: the arguments are still there at exit.
#[fexit(function = "inet_stream_connect")]
pub(crate) fn fexit_inet_stream_connect(ctx: FExitContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        let ret = int_ret(&ctx, 4);
        // The connect's start is not known here; the open record's times are not used.
        connect_exit(pid_tgid, ctx.arg(0), ret, 0);
    }
    0
}

/// `void tcp_close(struct sock *sk, long timeout)`.
#[fentry(function = "tcp_close")]
pub(crate) fn fentry_tcp_close(ctx: FEntryContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        close_enter(pid_tgid, ctx.arg(0));
    }
    0
}

/// `int tcp_sendpage(struct sock *sk, struct page *page, int offset, size_t size, int flags)`
/// (before 6.5): sendfile and splice to a socket.
#[fentry(function = "tcp_sendpage")]
pub(crate) fn fentry_tcp_sendpage(ctx: FEntryContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        sendpage_enter(pid_tgid, ctx.arg(0));
    }
    0
}

#[fexit(function = "tcp_sendpage")]
pub(crate) fn fexit_tcp_sendpage(ctx: FExitContext) -> u32 {
    if let Some(pid_tgid) = current_selected() {
        data_exit(pid_tgid, KOP_SENDPAGE, int_ret(&ctx, 5));
    }
    0
}
