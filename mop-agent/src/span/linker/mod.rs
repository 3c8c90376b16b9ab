//! Trace context between spans: which span is whose parent, and which trace each belongs to.
//!
//! Every request gets its ids when it *starts* (its head is parsed), so that a call made while
//! serving it can point at it before it completes:
//! - a server request with a `traceparent` (or B3) header joins the caller's trace;
//! - a server request whose client is instrumented on this node (the other end of the same TCP
//!   connection) becomes a child of that client request, matched in order on the connection
//!   (by stream on HTTP/2); the two starts may arrive in either order, so a server start waits
//!   a little for its client's;
//! - a client request made while a server request is active on the same thread becomes its
//!   child (exact for thread-per-request servers; for event loops it is the most recent
//!   request still being served on that thread);
//! - anything else starts a new trace, sampled by the configured sampler.
//!
//! A span whose trace is not settled yet (its server is waiting for its client) is held by
//! the span stage and released when it settles. Every table is bounded.

use std::{
    collections::{HashMap, VecDeque},
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
/// Unmatched starts kept per connection pair.
const MAX_PER_PAIR: usize = 256;

/// Identifies a request: process, connection, and the request's sequence on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtxKey {
    /// Process.
    pub pid: u32,
    /// Connection.
    pub conn_id: u64,
    /// Request on the connection ([`mop_protocol::HttpExchange::seq`]).
    pub seq: u64,
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
    /// The trace id the kernel gave the request (TCP-option propagation): a root keeps it.
    kernel_trace: Option<TraceId>,
}

/// The two ends of a connection as `(client, server)`, and the HTTP/2 stream.
type PairKey = (SocketAddr, SocketAddr, u32);

/// The context table.
pub struct Linker {
    ids: IdGenerator,
    sampler: Sampler,
    contexts: HashMap<CtxKey, Ctx>,
    /// Active server requests per (pid, tid), most recent last.
    active: HashMap<(u32, u32), Vec<CtxKey>>,
    /// Client starts whose instrumented server has not started yet.
    clients_waiting: HashMap<PairKey, VecDeque<CtxKey>>,
    /// Server starts waiting for their instrumented client's start.
    servers_waiting: HashMap<PairKey, VecDeque<CtxKey>>,
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
    /// spans can go).
    pub fn on_start(&mut self, s: &ConnStart, now: Instant) -> Vec<CtxKey> {
        if self.contexts.len() >= MAX_CONTEXTS {
            self.evict_oldest();
        }
        let key = CtxKey {
            pid: s.pid,
            conn_id: s.conn_id,
            seq: s.start.seq,
        };
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
        let pair = (s.remote, s.local, s.start.stream_id);
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
            // the connection's queues stay in step for the requests that follow.
            if let Some(client) = pop(&mut self.clients_waiting, &pair) {
                if !resolved {
                    self.link(key, client, settled);
                }
            } else {
                if !resolved && let Some(c) = self.contexts.get_mut(&key) {
                    c.awaiting_peer = Some(now + PEER_WAIT);
                }
                push(&mut self.servers_waiting, pair, key);
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
        if s.peer_tracked {
            let pair = (s.local, s.remote, s.start.stream_id);
            if let Some(waiting) = pop(&mut self.servers_waiting, &pair) {
                // A server that already knows its parent (header or TCP option) only pairs.
                let awaiting = self
                    .contexts
                    .get_mut(&waiting)
                    .and_then(|c| c.awaiting_peer.take());
                if awaiting.is_some() {
                    self.link(waiting, key, settled);
                }
            } else {
                push(&mut self.clients_waiting, pair, key);
            }
        }
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
            self.make_root(key, &mut settled);
        }
        let stale = |t: &Instant| now.duration_since(*t) > PEER_WAIT * 4;
        let contexts = &self.contexts;
        for queue in self
            .clients_waiting
            .values_mut()
            .chain(self.servers_waiting.values_mut())
        {
            queue.retain(|k| contexts.get(k).is_some_and(|c| !stale(&c.created)));
        }
        self.clients_waiting.retain(|_, q| !q.is_empty());
        self.servers_waiting.retain(|_, q| !q.is_empty());
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
        self.contexts.remove(key);
    }

    /// Drops everything of a process that exited.
    pub fn forget_pid(&mut self, pid: u32) {
        self.contexts.retain(|k, _| k.pid != pid);
        self.active.retain(|(p, _), _| *p != pid);
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

/// A span id, unless it is all zeros (none).
fn nonzero_span(id: [u8; 8]) -> Option<SpanId> {
    (id != [0; 8]).then_some(SpanId(id))
}

fn pop(map: &mut HashMap<PairKey, VecDeque<CtxKey>>, pair: &PairKey) -> Option<CtxKey> {
    let queue = map.get_mut(pair)?;
    let key = queue.pop_front();
    if queue.is_empty() {
        map.remove(pair);
    }
    key
}

fn push(map: &mut HashMap<PairKey, VecDeque<CtxKey>>, pair: PairKey, key: CtxKey) {
    let queue = map.entry(pair).or_default();
    if queue.len() >= MAX_PER_PAIR {
        queue.pop_front();
    }
    queue.push_back(key);
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
