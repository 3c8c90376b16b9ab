//! The span stage task: exchanges in, spans out, with the process table kept current by
//! discovery.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::{assembler::Assembler, model::{ServiceResource, Span}};
use crate::{capture::conntrack::ConnExchange, telemetry::SelfMetrics};

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
        }
    }

    /// Runs until the exchange channel closes (the capture stage stopped and everything it
    /// sent is handled): shutdown flows down the pipeline. Every span goes to `sink`.
    pub async fn run(mut self, mut sink: impl FnMut(Arc<Span>)) {
        let mut clock_refresh = tokio::time::interval(Duration::from_secs(60));
        clock_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                Some(msg) = self.control.recv() => self.on_control(msg),
                ex = self.exchanges.recv() => match ex {
                    Some(ex) => self.on_exchange(&ex, &mut sink),
                    None => break,
                },
                _ = clock_refresh.tick() => self.assembler.refresh_clock(),
            }
        }
    }

    fn on_control(&mut self, msg: SpanControl) {
        match msg {
            SpanControl::ProcessStarted { pid, resource } => {
                self.assembler.process_started(pid, resource);
            }
            SpanControl::ProcessExited(pid) => self.assembler.process_exited(pid),
        }
    }

    fn on_exchange(&mut self, ex: &ConnExchange, sink: &mut impl FnMut(Arc<Span>)) {
        let span = self.assembler.build(ex);
        self.metrics.inc_spans_produced();
        sink(Arc::new(span));
    }
}
