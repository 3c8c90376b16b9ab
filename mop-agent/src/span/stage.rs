//! The span stage task: request starts and completed exchanges in, spans out, with the
//! process table kept current by discovery and trace context settled by the linker.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{
    assembler::Assembler,
    linker::{CtxKey, Linker},
    model::{ServiceResource, Span},
};
use crate::{
    capture::conntrack::{ConnExchange, Observed},
    telemetry::{DropReason, SelfMetrics},
};

/// Processes whose observations may wait for discovery's decision at once.
const MAX_UNDECIDED_PIDS: usize = 256;
/// Observations held per undecided process.
const MAX_HELD_PER_PID: usize = 512;
/// How long observations wait for discovery before they are dropped.
const HOLD_TIMEOUT: Duration = Duration::from_secs(3);
/// Completed exchanges held at most while their trace settles.
const MAX_UNSETTLED: usize = 16_384;
/// How often waiting trace context is settled by timeout.
const LINK_TICK: Duration = Duration::from_millis(50);

/// Messages from discovery to the span stage.
#[derive(Clone, Debug)]
pub enum SpanControl {
    /// A process is now instrumented (or its resource changed); its spans carry this resource.
    ProcessStarted {
        /// The process.
        pid: u32,
        /// Its resource.
        resource: Arc<ServiceResource>,
    },
    /// The process exited (or is not to be instrumented).
    ProcessExited(u32),
}

/// Observations of a process discovery has not decided about yet (a program that just called
/// `execve` is captured before discovery matches it).
struct Undecided {
    since: Instant,
    held: Vec<Observed>,
}

/// The span stage.
pub struct SpanStage {
    assembler: Assembler,
    linker: Linker,
    observed: mpsc::Receiver<Observed>,
    control: mpsc::Receiver<SpanControl>,
    metrics: Arc<SelfMetrics>,
    undecided: HashMap<u32, Undecided>,
    /// Completed exchanges whose trace is not settled yet.
    unsettled: HashMap<CtxKey, ConnExchange>,
}

fn key_of(cx: &ConnExchange) -> CtxKey {
    CtxKey {
        pid: cx.pid,
        conn_id: cx.conn_id,
        seq: cx.exchange.seq,
    }
}

impl SpanStage {
    /// Wires the stage to its inputs.
    pub fn new(
        assembler: Assembler,
        linker: Linker,
        observed: mpsc::Receiver<Observed>,
        control: mpsc::Receiver<SpanControl>,
        metrics: Arc<SelfMetrics>,
    ) -> Self {
        Self {
            assembler,
            linker,
            observed,
            control,
            metrics,
            undecided: HashMap::new(),
            unsettled: HashMap::new(),
        }
    }

    /// Runs until the observation channel closes (the capture stage stopped and everything it
    /// sent is handled): shutdown flows down the pipeline. Every span goes to `sink`; spans
    /// still waiting for their trace are emitted as they are when the input ends.
    pub async fn run(mut self, mut sink: impl FnMut(Arc<Span>)) {
        let mut clock_refresh = tokio::time::interval(Duration::from_mins(1));
        clock_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut link_tick = tokio::time::interval(LINK_TICK);
        link_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                Some(msg) = self.control.recv() => self.on_control(msg, &mut sink),
                o = self.observed.recv() => match o {
                    Some(o) => self.on_observed(o, &mut sink),
                    None => break,
                },
                _ = link_tick.tick() => {
                    let settled = self.linker.expire(Instant::now());
                    self.release(&settled, &mut sink);
                    self.expire_undecided();
                }
                _ = clock_refresh.tick() => self.assembler.refresh_clock(),
            }
        }
        // Whatever still waits for a peer that never came settles as a new trace.
        let settled = self
            .linker
            .expire(Instant::now() + super::linker::PEER_WAIT * 2);
        self.release(&settled, &mut sink);
    }

    fn on_control(&mut self, msg: SpanControl, sink: &mut impl FnMut(Arc<Span>)) {
        match msg {
            SpanControl::ProcessStarted { pid, resource } => {
                self.assembler.process_started(pid, resource);
                if let Some(u) = self.undecided.remove(&pid) {
                    for o in u.held {
                        self.on_observed(o, sink);
                    }
                }
            }
            SpanControl::ProcessExited(pid) => {
                self.assembler.process_exited(pid);
                self.undecided.remove(&pid);
                self.linker.forget_pid(pid);
                self.unsettled.retain(|k, _| k.pid != pid);
            }
        }
    }

    fn on_observed(&mut self, o: Observed, sink: &mut impl FnMut(Arc<Span>)) {
        let pid = match &o {
            Observed::Start(s) => s.pid,
            Observed::Done(cx) => cx.pid,
        };
        if !self.assembler.knows(pid) {
            self.hold_undecided(pid, o);
            return;
        }
        match o {
            Observed::Start(s) => {
                let settled = self.linker.on_start(&s, Instant::now());
                self.release(&settled, sink);
            }
            Observed::Done(cx) => {
                let key = key_of(&cx);
                self.linker.on_done(&key);
                if self.linker.ids(&key).is_some() {
                    self.emit(&key, &cx, sink);
                } else if self.unsettled.len() < MAX_UNSETTLED {
                    self.unsettled.insert(key, cx);
                } else {
                    // Too much waiting: settle it as a new trace rather than hold more.
                    self.linker.forget(&key);
                    self.emit(&key, &cx, sink);
                }
            }
        }
    }

    fn hold_undecided(&mut self, pid: u32, o: Observed) {
        if !self.undecided.contains_key(&pid) && self.undecided.len() >= MAX_UNDECIDED_PIDS {
            self.drop_unknown(&o);
            return;
        }
        let u = self.undecided.entry(pid).or_insert_with(|| Undecided {
            since: Instant::now(),
            held: Vec::new(),
        });
        if u.held.len() < MAX_HELD_PER_PID {
            u.held.push(o);
        } else {
            self.drop_unknown(&o);
        }
    }

    fn drop_unknown(&self, o: &Observed) {
        if matches!(o, Observed::Done(_)) {
            self.metrics
                .add_spans_dropped(DropReason::UnknownProcess, 1);
        }
    }

    /// Emits the held spans of contexts whose trace just settled.
    fn release(&mut self, settled: &[CtxKey], sink: &mut impl FnMut(Arc<Span>)) {
        for key in settled {
            if let Some(cx) = self.unsettled.remove(key) {
                self.emit(key, &cx, sink);
            }
        }
    }

    /// Drops observations that waited too long for discovery.
    fn expire_undecided(&mut self) {
        let metrics = &self.metrics;
        self.undecided.retain(|_, u| {
            let keep = u.since.elapsed() < HOLD_TIMEOUT;
            if !keep {
                let done = u
                    .held
                    .iter()
                    .filter(|o| matches!(o, Observed::Done(_)))
                    .count();
                metrics.add_spans_dropped(DropReason::UnknownProcess, done as u64);
            }
            keep
        });
    }

    fn emit(&mut self, key: &CtxKey, cx: &ConnExchange, sink: &mut impl FnMut(Arc<Span>)) {
        let Some(ids) = self.linker.ids(key) else {
            return;
        };
        self.linker.forget(key);
        let sampled = ids.flags & 1 != 0;
        if let Some(span) = self.assembler.build(cx, ids) {
            self.metrics.inc_spans_produced();
            if !sampled {
                self.metrics.add_spans_dropped(DropReason::Sampled, 1);
            }
            sink(Arc::new(span));
        }
    }
}
