//! Trace context between spans: which span is whose parent, and which trace each belongs to.
//!
//! Every request gets its ids when it *starts* (its head is parsed), so that a call made while
//! serving it can point at it before it completes:
//! - a server request with a `traceparent` (or B3) header joins the caller's trace;
//! - else, with TCP-option propagation, a server request whose caller's context came in a TCP
//!   option joins that trace as a child of the caller's span, and a client request made while
//!   the kernel saw its thread serving a request is that request's child; a request the kernel
//!   gave ids keeps its span id (the far end already knows it), and a root its trace id;
//! - else a server request whose client is instrumented on this node (the other end of the same TCP
//!   connection) becomes a child of that client request: the request with the same sequence
//!   number on that connection (HTTP/1 request order, the HTTP/2 stream id), so that a request
//!   one end saw and the other did not can never shift the pairs. The two starts may arrive in
//!   either order: a client's first request is often read before its server's `accept`
//!   returns, so every client start waits a little for its server's (whether or not that end
//!   is known yet), and a server start waits a little for its client's;
//! - a client request made while a server request is active on the same thread becomes its
//!   child (exact for thread-per-request servers; for event loops it is the most recent
//!   request still being served on that thread);
//! - anything else starts a new trace, sampled by the configured sampler.
//!
//! A span whose trace is not settled yet (its server is waiting for its client) is held by
//! the span stage and released when it settles. Every table is bounded.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use mop_protocol::Role;

use super::{
    context::{ParentContext, parent_from_headers},
    ids::IdGenerator,
    model::{SpanId, TraceId},
    sampler::Sampler,
};
use crate::capture::conntrack::ConnStart;

/// How long a server start waits for the start of its instrumented client.
pub const PEER_WAIT: Duration = Duration::from_millis(500);
/// Contexts kept at most; the oldest are dropped beyond it.
const MAX_CONTEXTS: usize = 65_536;
/// A context whose request never completes is forgotten after this long.
const CONTEXT_TTL: Duration = Duration::from_mins(5);
/// Client starts kept waiting for a server end that is not known yet (a server end that is
/// known always gets its entry).
const MAX_CLIENTS_WAITING: usize = 16_384;

/// Identifies a request: process, connection, and the request's sequence on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtxKey {
    /// Process.
    pub pid: u32,
    /// Connection.
    pub conn_id: u64,
    /// Request on the connection ([`mop_protocol::HttpExchange::seq`]).
    pub seq: u64,
    /// 0 for the request the key names; a context moved aside by [`Linker::retire`] (its
    /// connection id was reused) gets a unique non-zero value.
    pub retired: u64,
}

impl CtxKey {
    /// The key of request `seq` on connection `conn_id` of process `pid`.
    pub fn new(pid: u32, conn_id: u64, seq: u64) -> Self {
        Self {
            pid,
            conn_id,
            seq,
            retired: 0,
        }
    }
}

/// The settled ids of a span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// Parent span, if any.
    pub parent: Option<SpanId>,
    /// W3C trace flags.
    pub flags: u8,
    /// W3C `tracestate` of a remote parent.
    pub trace_state: Option<String>,
}

/// The trace a context belongs to, once settled.
#[derive(Clone, Debug)]
struct Trace {
    id: TraceId,
    flags: u8,
    state: Option<String>,
}

struct Ctx {
    span_id: SpanId,
    parent: Option<SpanId>,
    trace: Option<Trace>,
    /// Contexts whose trace is this one's, waiting for it to settle.
    waiting: Vec<CtxKey>,
    /// A server start waiting for its client's start until this instant.
    awaiting_peer: Option<Instant>,
    created: Instant,
    /// Where it is registered as an active server request.
    active_on: Option<(u32, u32)>,
    /// Where it waits for the other end's start (`clients_waiting` for a client,
    /// `servers_waiting` for a server).
    waiting_as: Option<PairKey>,
    /// The trace id the kernel gave the request (TCP-option propagation): a root keeps it.
    kernel_trace: Option<TraceId>,
}

/// The two ends of a connection as `(client, server)`, the HTTP/2 stream, and the request's
/// sequence number on the connection (the same at both ends).
type PairKey = (SocketAddr, SocketAddr, u32, u64);

/// The context table.
pub struct Linker {
    ids: IdGenerator,
    sampler: Sampler,
    contexts: HashMap<CtxKey, Ctx>,
    /// Active server requests per (pid, tid), most recent last.
    active: HashMap<(u32, u32), Vec<CtxKey>>,
    /// Client starts whose server end has not started yet (it may be instrumented).
    clients_waiting: HashMap<PairKey, CtxKey>,
    /// Server starts waiting for their instrumented client's start.
    servers_waiting: HashMap<PairKey, CtxKey>,
    /// The last value given to [`CtxKey::retired`].
    retired: u64,
}

impl Linker {
    /// An empty table.
    pub fn new(ids: IdGenerator, sampler: Sampler) -> Self {
        Self {
            ids,
            sampler,
            contexts: HashMap::new(),
            active: HashMap::new(),
            clients_waiting: HashMap::new(),
            servers_waiting: HashMap::new(),
            retired: 0,
        }
    }

    /// Contexts held now (for self-metrics and tests).
    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    /// True when no context is held.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// A request started; returns the contexts whose trace settled because of it (their held
    /// spans can go). A context already held under its key is first moved aside
    /// ([`Linker::retire`]); the caller retires it itself when it holds state under the key.
    pub fn on_start(&mut self, s: &ConnStart, now: Instant) -> Vec<CtxKey> {
        if self.contexts.len() >= MAX_CONTEXTS {
            self.evict_oldest();
        }
        let key = CtxKey::new(s.pid, s.conn_id, s.start.seq);
        self.retire(&key);
        // The kernel's span id already travelled in the request's first packet.
        let span_id = s
            .kernel_ctx
            .map_or_else(|| self.ids.span_id(), |k| SpanId(k.span_id));
        let ctx = Ctx {
            span_id,
            parent: None,
            trace: None,
            waiting: Vec::new(),
            awaiting_peer: None,
            created: now,
            active_on: None,
            waiting_as: None,
            kernel_trace: s.kernel_ctx.map(|k| TraceId(k.trace_id)),
        };
        self.contexts.insert(key, ctx);
        let mut settled = Vec::new();
        match s.start.role {
            Role::Server => self.start_server(key, s, now, &mut settled),
            Role::Client => self.start_client(key, s, &mut settled),
        }
        settled
    }

    fn start_server(
        &mut self,
        key: CtxKey,
        s: &ConnStart,
        now: Instant,
        settled: &mut Vec<CtxKey>,
    ) {
        let pair = (s.remote, s.local, s.start.stream_id, s.start.seq);
        let kernel_parent = s.kernel_ctx.and_then(|k| nonzero_span(k.parent_span_id));
        let resolved = if let Some(p) = parent_from_headers(&s.start.trace_headers) {
            self.join_remote(key, &p);
            true
        } else if let (Some(k), Some(parent)) = (s.kernel_ctx, kernel_parent) {
            // The caller's context arrived in a TCP option.
            self.join_kernel(key, TraceId(k.trace_id), parent, settled);
            true
        } else {
            false
        };
        if s.peer_tracked {
            // Pair with the instrumented client's start even when the parent is known, so
            // that neither end is left waiting for the other.
            if let Some(client) = self.take_waiting(Waiting::Client, &pair) {
                if !resolved {
                    self.link(key, client, settled);
                }
            } else {
                if !resolved && let Some(c) = self.contexts.get_mut(&key) {
                    c.awaiting_peer = Some(now + PEER_WAIT);
                }
                self.wait(Waiting::Server, pair, key);
            }
        } else if !resolved {
            self.make_root(key, settled);
        }
        let thread = (s.pid, s.start.tid);
        self.active.entry(thread).or_default().push(key);
        if let Some(c) = self.contexts.get_mut(&key) {
            c.active_on = Some(thread);
        }
    }

    fn start_client(&mut self, key: CtxKey, s: &ConnStart, settled: &mut Vec<CtxKey>) {
        let served = self
            .active
            .get(&(s.pid, s.start.tid))
            .and_then(|list| list.last().copied());
        let kernel_parent = s.kernel_ctx.and_then(|k| nonzero_span(k.parent_span_id));
        if let Some(p) = parent_from_headers(&s.start.trace_headers) {
            // The application propagates context itself: its span is the parent.
            self.join_remote(key, &p);
        } else if let (Some(k), Some(parent)) = (s.kernel_ctx, kernel_parent) {
            // The kernel saw the thread serving `parent` when the call started.
            match self.active_with_span(s.pid, s.start.tid, parent) {
                Some(active) => self.link(key, active, settled),
                None => self.join_kernel(key, TraceId(k.trace_id), parent, settled),
            }
        } else if let Some(server) = served {
            self.link(key, server, settled);
        } else {
            self.make_root(key, settled);
        }
        // Whether or not the server end is known yet: it may be instrumented and only
        // `accept` the connection after this request was written.
        let pair = (s.local, s.remote, s.start.stream_id, s.start.seq);
        if let Some(waiting) = self.take_waiting(Waiting::Server, &pair) {
            // A server that already knows its parent (header or TCP option) only pairs.
            let awaiting = self
                .contexts
                .get_mut(&waiting)
                .and_then(|c| c.awaiting_peer.take());
            if awaiting.is_some() {
                self.link(waiting, key, settled);
            }
        } else if s.peer_tracked || self.clients_waiting.len() < MAX_CLIENTS_WAITING {
            self.wait(Waiting::Client, pair, key);
        }
    }

    fn waiting_map(&mut self, side: Waiting) -> &mut HashMap<PairKey, CtxKey> {
        match side {
            Waiting::Client => &mut self.clients_waiting,
            Waiting::Server => &mut self.servers_waiting,
        }
    }

    /// Registers `key` as waiting for the other end of `pair`; an older entry for the same
    /// pair (the client's port reused within the wait) is dropped.
    fn wait(&mut self, side: Waiting, pair: PairKey, key: CtxKey) {
        if let Some(old) = self.waiting_map(side).insert(pair, key)
            && let Some(c) = self.contexts.get_mut(&old)
        {
            c.waiting_as = None;
        }
        if let Some(c) = self.contexts.get_mut(&key) {
            c.waiting_as = Some(pair);
        }
    }

    /// Takes the start waiting on `side` of `pair`, if any.
    fn take_waiting(&mut self, side: Waiting, pair: &PairKey) -> Option<CtxKey> {
        let key = self.waiting_map(side).remove(pair)?;
        if let Some(c) = self.contexts.get_mut(&key) {
            c.waiting_as = None;
        }
        Some(key)
    }

    /// Removes `key`'s entry from the waiting maps, if it has one.
    fn stop_waiting(&mut self, key: &CtxKey) {
        let Some(pair) = self.contexts.get_mut(key).and_then(|c| c.waiting_as.take()) else {
            return;
        };
        for side in [Waiting::Client, Waiting::Server] {
            let map = self.waiting_map(side);
            if map.get(&pair) == Some(key) {
                map.remove(&pair);
            }
        }
    }

    /// Moves the context held under `key` aside, to a key of its own, and returns that key;
    /// `None` when no context is held under `key`.
    ///
    /// Connection ids are the kernel's socket addresses, which it recycles: a new connection
    /// of the same process can get the id of one that just closed while a request of the old
    /// one still waits for its trace to settle (its span held). Without this the new request
    /// would overwrite the old one's context. The retired context is no longer active on its
    /// thread (its connection is gone) but keeps its links and waits as before.
    pub fn retire(&mut self, key: &CtxKey) -> Option<CtxKey> {
        if !self.contexts.contains_key(key) {
            return None;
        }
        self.on_done(key);
        let mut ctx = self.contexts.remove(key)?;
        self.retired += 1;
        let new = CtxKey {
            retired: self.retired,
            ..*key
        };
        if let Some(pair) = ctx.waiting_as {
            for side in [Waiting::Client, Waiting::Server] {
                if let Some(k) = self.waiting_map(side).get_mut(&pair)
                    && k == key
                {
                    *k = new;
                }
            }
        }
        if ctx.parent.is_some() && ctx.trace.is_none() {
            // Waiting for its parent's trace: the parent lists it by key.
            for other in self.contexts.values_mut() {
                for k in &mut other.waiting {
                    if k == key {
                        *k = new;
                    }
                }
            }
        }
        ctx.active_on = None;
        self.contexts.insert(new, ctx);
        Some(new)
    }

    /// Joins a trace whose parent span is outside this node.
    fn join_remote(&mut self, key: CtxKey, p: &ParentContext) {
        let flags = self.sampler.flags_for_remote(p);
        if let Some(c) = self.contexts.get_mut(&key) {
            c.parent = Some(p.span_id);
            c.trace = Some(Trace {
                id: p.trace_id,
                flags,
                state: p.trace_state.clone(),
            });
        }
    }

    /// Joins the trace the kernel gave a request, as a child of `parent`; the sampling decision
    /// is taken on the trace id, so every agent on the path takes the same one.
    fn join_kernel(
        &mut self,
        key: CtxKey,
        trace_id: TraceId,
        parent: SpanId,
        settled: &mut Vec<CtxKey>,
    ) {
        if let Some(c) = self.contexts.get_mut(&key) {
            c.parent = Some(parent);
        }
        let flags = self.sampler.flags_for_root(&trace_id);
        self.settle(
            key,
            &Trace {
                id: trace_id,
                flags,
                state: None,
            },
            settled,
        );
    }

    /// The active server request of thread `(pid, tid)` whose span is `span`.
    fn active_with_span(&self, pid: u32, tid: u32, span: SpanId) -> Option<CtxKey> {
        self.active
            .get(&(pid, tid))?
            .iter()
            .rev()
            .copied()
            .find(|k| self.contexts.get(k).is_some_and(|c| c.span_id == span))
    }

    /// Starts a new trace at `key`, with the kernel's trace id when it gave one (so that the
    /// trace continues on the far side of the TCP option).
    fn make_root(&mut self, key: CtxKey, settled: &mut Vec<CtxKey>) {
        let kernel = self.contexts.get(&key).and_then(|c| c.kernel_trace);
        let id = kernel.unwrap_or_else(|| self.ids.trace_id());
        let flags = self.sampler.flags_for_root(&id);
        self.settle(
            key,
            &Trace {
                id,
                flags,
                state: None,
            },
            settled,
        );
    }

    /// Makes `child` a child of `parent`; the child's trace settles with the parent's.
    fn link(&mut self, child: CtxKey, parent: CtxKey, settled: &mut Vec<CtxKey>) {
        let Some(p) = self.contexts.get_mut(&parent) else {
            self.make_root(child, settled);
            return;
        };
        let span = p.span_id;
        let trace = p.trace.clone();
        if trace.is_none() {
            p.waiting.push(child);
        }
        if let Some(c) = self.contexts.get_mut(&child) {
            c.parent = Some(span);
        }
        if let Some(trace) = trace {
            self.settle(child, &trace, settled);
        }
    }

    /// Sets a context's trace and that of everything waiting on it.
    fn settle(&mut self, key: CtxKey, trace: &Trace, settled: &mut Vec<CtxKey>) {
        let mut work = vec![key];
        while let Some(k) = work.pop() {
            let Some(c) = self.contexts.get_mut(&k) else {
                continue;
            };
            if c.trace.is_some() {
                continue;
            }
            c.trace = Some(trace.clone());
            work.append(&mut c.waiting);
            settled.push(k);
        }
    }

    /// Server starts whose client never showed up become roots; returns what settled.
    pub fn expire(&mut self, now: Instant) -> Vec<CtxKey> {
        let late: Vec<CtxKey> = self
            .contexts
            .iter()
            .filter(|(_, c)| c.awaiting_peer.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        let mut settled = Vec::new();
        for key in late {
            if let Some(c) = self.contexts.get_mut(&key) {
                c.awaiting_peer = None;
            }
            // A client start that comes later must not re-parent a span already settled.
            self.stop_waiting(&key);
            self.make_root(key, &mut settled);
        }
        let stale = |t: &Instant| now.duration_since(*t) > PEER_WAIT * 4;
        let contexts = &mut self.contexts;
        for map in [&mut self.clients_waiting, &mut self.servers_waiting] {
            map.retain(|_, k| match contexts.get_mut(k) {
                Some(c) if stale(&c.created) => {
                    c.waiting_as = None;
                    false
                }
                Some(_) => true,
                None => false,
            });
        }
        let dead: Vec<CtxKey> = self
            .contexts
            .iter()
            .filter(|(_, c)| now.duration_since(c.created) > CONTEXT_TTL)
            .map(|(k, _)| *k)
            .collect();
        for key in dead {
            self.forget(&key);
        }
        settled
    }

    /// The settled ids of a completed request, or `None` while its trace is not settled.
    /// A request never announced by a start gets a fresh root.
    pub fn ids(&mut self, key: &CtxKey) -> Option<Resolved> {
        if !self.contexts.contains_key(key) {
            let id = self.ids.trace_id();
            return Some(Resolved {
                flags: self.sampler.flags_for_root(&id),
                trace_id: id,
                span_id: self.ids.span_id(),
                parent: None,
                trace_state: None,
            });
        }
        let c = self.contexts.get(key)?;
        let t = c.trace.as_ref()?;
        Some(Resolved {
            trace_id: t.id,
            span_id: c.span_id,
            parent: c.parent,
            flags: t.flags,
            trace_state: t.state.clone(),
        })
    }

    /// A request completed: it is no longer active on its thread. Its context stays until
    /// [`Linker::forget`] (its children may still need it).
    pub fn on_done(&mut self, key: &CtxKey) {
        let Some(thread) = self.contexts.get_mut(key).and_then(|c| c.active_on.take()) else {
            return;
        };
        if let Some(list) = self.active.get_mut(&thread) {
            list.retain(|k| k != key);
            if list.is_empty() {
                self.active.remove(&thread);
            }
        }
    }

    /// Drops a context whose span was emitted.
    pub fn forget(&mut self, key: &CtxKey) {
        self.on_done(key);
        self.stop_waiting(key);
        self.contexts.remove(key);
    }

    /// Drops everything of a process that exited.
    pub fn forget_pid(&mut self, pid: u32) {
        self.contexts.retain(|k, _| k.pid != pid);
        self.active.retain(|(p, _), _| *p != pid);
        self.clients_waiting.retain(|_, k| k.pid != pid);
        self.servers_waiting.retain(|_, k| k.pid != pid);
    }

    fn evict_oldest(&mut self) {
        let mut ages: Vec<Instant> = self.contexts.values().map(|c| c.created).collect();
        let n = (ages.len() / 8).max(1);
        let (_, cutoff, _) = ages.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        let old: Vec<CtxKey> = self
            .contexts
            .iter()
            .filter(|(_, c)| c.created <= cutoff)
            .map(|(k, _)| *k)
            .collect();
        for key in old {
            self.forget(&key);
        }
    }
}

/// Which end of a connection waits for the other's start.
#[derive(Clone, Copy)]
enum Waiting {
    Client,
    Server,
}

/// A span id, unless it is all zeros (none).
fn nonzero_span(id: [u8; 8]) -> Option<SpanId> {
    (id != [0; 8]).then_some(SpanId(id))
}

/// A request's start marker, for tests.
#[cfg(test)]
pub(crate) fn start_marker(role: Role, seq: u64, tid: u32) -> mop_protocol::RequestStart {
    mop_protocol::RequestStart {
        seq,
        role,
        tid,
        request_start_ns: 0,
        request_first_exit_ns: 0,
        stream_id: 0,
        trace_headers: mop_protocol::TraceHeaders::default(),
    }
}

#[cfg(test)]
mod tests;
