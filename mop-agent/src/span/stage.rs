//! The span stage task: exchanges in, spans out, with the process table kept current by
//! discovery.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{
    assembler::Assembler,
    model::{ServiceResource, Span},
};
use crate::{
    capture::conntrack::ConnExchange,
    telemetry::{DropReason, SelfMetrics},
};

/// Processes whose exchanges may wait for discovery's decision at once.
const MAX_UNDECIDED_PIDS: usize = 256;
/// Exchanges held per undecided process.
const MAX_HELD_PER_PID: usize = 256;
/// How long exchanges wait for discovery before they are dropped.
const HOLD_TIMEOUT: Duration = Duration::from_secs(3);

/// Exchanges of a process discovery has not decided about yet (a program that just called
/// `execve` is captured before discovery matches it).
struct Undecided {
    since: Instant,
    held: Vec<ConnExchange>,
}

/// Messages from discovery to the span stage.
#[derive(Clone, Debug)]
pub enum SpanControl {
    /// A process is now instrumented; its spans carry this resource.
    ProcessStarted {
        /// The process.
        pid: u32,
        /// Its resource.
        resource: Arc<ServiceResource>,
    },
    /// The process exited.
    ProcessExited(u32),
}

/// The span stage.
pub struct SpanStage {
    assembler: Assembler,
    exchanges: mpsc::Receiver<ConnExchange>,
    control: mpsc::Receiver<SpanControl>,
    metrics: Arc<SelfMetrics>,
    undecided: HashMap<u32, Undecided>,
}

impl SpanStage {
    /// Wires the stage to its inputs.
    pub fn new(
        assembler: Assembler,
        exchanges: mpsc::Receiver<ConnExchange>,
        control: mpsc::Receiver<SpanControl>,
        metrics: Arc<SelfMetrics>,
    ) -> Self {
        Self {
            assembler,
            exchanges,
            control,
            metrics,
            undecided: HashMap::new(),
        }
    }

    /// Runs until the exchange channel closes (the capture stage stopped and everything it
    /// sent is handled): shutdown flows down the pipeline. Every span goes to `sink`.
    pub async fn run(mut self, mut sink: impl FnMut(Arc<Span>)) {
        let mut clock_refresh = tokio::time::interval(Duration::from_mins(1));
        clock_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                Some(msg) = self.control.recv() => self.on_control(msg, &mut sink),
                ex = self.exchanges.recv() => match ex {
                    Some(ex) => self.on_exchange(ex, &mut sink),
                    None => break,
                },
                _ = clock_refresh.tick() => {
                    self.assembler.refresh_clock();
                    self.expire_undecided();
                }
            }
        }
    }

    fn on_control(&mut self, msg: SpanControl, sink: &mut impl FnMut(Arc<Span>)) {
        match msg {
            SpanControl::ProcessStarted { pid, resource } => {
                self.assembler.process_started(pid, resource);
                if let Some(u) = self.undecided.remove(&pid) {
                    for ex in &u.held {
                        self.emit(ex, sink);
                    }
                }
            }
            SpanControl::ProcessExited(pid) => {
                self.assembler.process_exited(pid);
                self.undecided.remove(&pid);
            }
        }
    }

    fn on_exchange(&mut self, ex: ConnExchange, sink: &mut impl FnMut(Arc<Span>)) {
        if self.assembler.knows(ex.pid) {
            self.emit(&ex, sink);
            return;
        }
        if !self.undecided.contains_key(&ex.pid) && self.undecided.len() >= MAX_UNDECIDED_PIDS {
            self.metrics
                .add_spans_dropped(DropReason::UnknownProcess, 1);
            return;
        }
        let u = self.undecided.entry(ex.pid).or_insert_with(|| Undecided {
            since: Instant::now(),
            held: Vec::new(),
        });
        if u.held.len() < MAX_HELD_PER_PID {
            u.held.push(ex);
        } else {
            self.metrics
                .add_spans_dropped(DropReason::UnknownProcess, 1);
        }
    }

    /// Drops exchanges that waited too long for discovery.
    fn expire_undecided(&mut self) {
        let metrics = &self.metrics;
        self.undecided.retain(|_, u| {
            let keep = u.since.elapsed() < HOLD_TIMEOUT;
            if !keep {
                metrics.add_spans_dropped(DropReason::UnknownProcess, u.held.len() as u64);
            }
            keep
        });
    }

    fn emit(&mut self, ex: &ConnExchange, sink: &mut impl FnMut(Arc<Span>)) {
        if let Some(span) = self.assembler.build(ex) {
            self.metrics.inc_spans_produced();
            sink(Arc::new(span));
        }
    }
}
