//! The kernel's per-process state as discovery sees it: the pid filter (`MOP_PIDS`), and the
//! entries a process leaves in the other maps once it is no longer captured.
//!
//! A process that exits closes its descriptors without a `close` call (its stdio, which the
//! kernel classified as not a socket; every socket of a server that was killed), and a thread
//! killed inside a syscall never returns from it. Their entries in the connection, in-flight
//! and TLS maps would stay until the LRU maps evict them, and under process churn the LRU
//! evicts live connections first. So the pids that leave the filter are swept from those maps
//! on the next discovery pass, in one walk of each map however many pids left.

use std::collections::BTreeSet;

use aya::{
    Pod,
    maps::{HashMap, MapData},
};
use mop_common::{
    kfunc::{KfuncInflight, SockKey},
    maps::{ConnInfo, ConnKey, InflightSyscall, MAP_PIDS, PID_SELECTED, SslCall, SslKey, TraceCtx},
};

use super::CaptureError;

/// Where discovery selects processes: the kernel's pid filter, and what the processes it drops
/// left in the kernel.
pub struct PidFilter {
    pub(super) map: HashMap<MapData, u32, u32>,
    pub(super) leftovers: ProcessMaps,
    /// Pids removed from the filter since the last sweep.
    removed: BTreeSet<u32>,
}

/// The maps whose keys start with (or are) the owning process or thread.
pub(super) struct ProcessMaps {
    pub(super) conns: HashMap<MapData, ConnKey, ConnInfo>,
    pub(super) inflight: HashMap<MapData, u64, InflightSyscall>,
    pub(super) ssl_calls: HashMap<MapData, u64, SslCall>,
    pub(super) ssl_fds: HashMap<MapData, SslKey, i32>,
    pub(super) thread_ctx: HashMap<MapData, u64, TraceCtx>,
    pub(super) sock_conns: HashMap<MapData, SockKey, ConnInfo>,
    pub(super) kfunc_inflight: HashMap<MapData, u64, KfuncInflight>,
    pub(super) ssl_socks: HashMap<MapData, SslKey, u64>,
    /// Keys read from one map in one sweep at most: twice the largest map, so that a walk the
    /// kernel restarts (a key deleted under it) still ends.
    pub(super) walk_limit: usize,
}

impl PidFilter {
    pub(super) fn new(map: HashMap<MapData, u32, u32>, leftovers: ProcessMaps) -> Self {
        Self {
            map,
            leftovers,
            removed: BTreeSet::new(),
        }
    }

    /// Starts capturing `pid`.
    pub fn add(&mut self, pid: u32) -> Result<(), CaptureError> {
        self.removed.remove(&pid);
        self.map
            .insert(pid, PID_SELECTED, 0)
            .map_err(|source| CaptureError::Map {
                name: MAP_PIDS,
                source,
            })
    }

    /// Stops capturing `pid` (a pid that was not there is fine); its entries in the other maps
    /// go at the next [`PidFilter::sweep`].
    pub fn remove(&mut self, pid: u32) {
        let _ = self.map.remove(&pid);
        self.removed.insert(pid);
    }

    /// Removes from the filter every pid `keep` refuses (as [`PidFilter::remove`] does); returns
    /// how many went. The kernel adds a pid on its own at `exec`, and discovery may never hear
    /// of it (its report dropped when discovery is behind): this is how such pids leave.
    pub fn reconcile(&mut self, keep: impl Fn(u32) -> bool) -> usize {
        let stray: Vec<u32> = self
            .map
            .keys()
            .take(self.leftovers.walk_limit)
            .filter_map(Result::ok)
            .filter(|pid| !keep(*pid))
            .collect();
        for pid in &stray {
            self.remove(*pid);
        }
        if !stray.is_empty() {
            tracing::debug!(
                processes = stray.len(),
                "Removed pids the kernel captured at exec that discovery does not keep."
            );
        }
        stray.len()
    }

    /// Deletes every entry the pids removed since the last sweep left in the kernel's maps,
    /// except those of a pid the filter holds again (reused by a new program the kernel
    /// captures since its `exec`). Returns how many entries went.
    pub fn sweep(&mut self) -> usize {
        if self.removed.is_empty() {
            return 0;
        }
        let mut gone = std::mem::take(&mut self.removed);
        gone.retain(|pid| self.map.get(pid, 0).is_err());
        let swept = self.leftovers.sweep(&gone);
        tracing::debug!(
            processes = gone.len(),
            entries = swept,
            "Swept the kernel state of processes no longer captured."
        );
        swept
    }
}

impl ProcessMaps {
    /// Deletes the entries of `pids` from every map.
    fn sweep(&mut self, pids: &BTreeSet<u32>) -> usize {
        let limit = self.walk_limit;
        let thread = |k: &u64| (k >> 32) as u32;
        sweep_map(&mut self.conns, pids, limit, |k| k.pid)
            + sweep_map(&mut self.inflight, pids, limit, thread)
            + sweep_map(&mut self.ssl_calls, pids, limit, thread)
            + sweep_map(&mut self.ssl_fds, pids, limit, |k| k.pid)
            + sweep_map(&mut self.thread_ctx, pids, limit, thread)
            + sweep_map(&mut self.sock_conns, pids, limit, |k| k.pid)
            + sweep_map(&mut self.kfunc_inflight, pids, limit, thread)
            + sweep_map(&mut self.ssl_socks, pids, limit, |k| k.pid)
    }
}

/// Deletes the keys of `map` whose owner is in `pids`, reading at most `limit` keys; returns
/// how many it deleted.
fn sweep_map<K: Pod, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    pids: &BTreeSet<u32>,
    limit: usize,
    owner: impl Fn(&K) -> u32,
) -> usize {
    let doomed: Vec<K> = map
        .keys()
        .take(limit)
        .filter_map(Result::ok)
        .filter(|k| pids.contains(&owner(k)))
        .collect();
    doomed.iter().filter(|k| map.remove(k).is_ok()).count()
}
