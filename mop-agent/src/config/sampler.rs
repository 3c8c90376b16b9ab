//! `otel_traces_export.sampler` (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`): which
//! traces are kept, with the OpenTelemetry sampler names OBI accepts.

use serde::Deserialize;

use super::{
    value::{self, Bad, Ctx, Parsed},
    yaml::Node,
};

/// Which traces are kept (OpenTelemetry sampler names and `arg`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerConfig {
    /// Keep a trace when its parent was kept; keep all roots (default).
    ParentBasedAlwaysOn,
    /// Keep a trace when its parent was kept; drop all roots.
    ParentBasedAlwaysOff,
    /// Keep a trace when its parent was kept; keep this fraction of roots.
    ParentBasedTraceIdRatio(f64),
    /// Keep everything.
    AlwaysOn,
    /// Keep nothing.
    AlwaysOff,
    /// Keep this fraction of traces by trace id.
    TraceIdRatio(f64),
}

impl SamplerConfig {
    /// The sampler name and its argument, if it takes one.
    pub fn name_and_arg(self) -> (&'static str, Option<f64>) {
        match self {
            Self::ParentBasedAlwaysOn => ("parentbased_always_on", None),
            Self::ParentBasedAlwaysOff => ("parentbased_always_off", None),
            Self::ParentBasedTraceIdRatio(r) => ("parentbased_traceidratio", Some(r)),
            Self::AlwaysOn => ("always_on", None),
            Self::AlwaysOff => ("always_off", None),
            Self::TraceIdRatio(r) => ("traceidratio", Some(r)),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum SamplerName {
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio,
    AlwaysOn,
    AlwaysOff,
    Ratio,
}

const SAMPLERS: &[(&str, SamplerName)] = &[
    ("parentbased_always_on", SamplerName::ParentBasedAlwaysOn),
    ("parentbased_always_off", SamplerName::ParentBasedAlwaysOff),
    ("parentbased_traceidratio", SamplerName::ParentBasedRatio),
    ("always_on", SamplerName::AlwaysOn),
    ("always_off", SamplerName::AlwaysOff),
    ("traceidratio", SamplerName::Ratio),
];

fn ratio(node: &Node) -> Parsed<f64> {
    const EXPECTED: &str = "a ratio from 0 to 1";
    let s = value::scalar(node, EXPECTED)?;
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| Bad::Invalid(EXPECTED.to_owned()))
}

/// `otel_traces_export.sampler` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSampler {
    name: Option<Node>,
    arg: Option<Node>,
}

pub(super) fn build(raw: &RawSampler, ctx: &mut Ctx<'_>) -> SamplerConfig {
    let name = ctx
        .get(
            "otel_traces_export.sampler.name",
            raw.name.as_ref(),
            &["OTEL_TRACES_SAMPLER"],
            value::choice(
                SAMPLERS,
                &["jaeger_remote", "parentbased_jaeger_remote", "xray"],
            ),
        )
        .unwrap_or(SamplerName::ParentBasedAlwaysOn);
    // Per the specification the argument only matters for ratio samplers (default 1.0).
    let needs_arg = matches!(name, SamplerName::Ratio | SamplerName::ParentBasedRatio);
    let arg = if needs_arg {
        ctx.get(
            "otel_traces_export.sampler.arg",
            raw.arg.as_ref(),
            &["OTEL_TRACES_SAMPLER_ARG"],
            ratio,
        )
        .unwrap_or(1.0)
    } else {
        1.0
    };
    match name {
        SamplerName::ParentBasedAlwaysOn => SamplerConfig::ParentBasedAlwaysOn,
        SamplerName::ParentBasedAlwaysOff => SamplerConfig::ParentBasedAlwaysOff,
        SamplerName::ParentBasedRatio => SamplerConfig::ParentBasedTraceIdRatio(arg),
        SamplerName::AlwaysOn => SamplerConfig::AlwaysOn,
        SamplerName::AlwaysOff => SamplerConfig::AlwaysOff,
        SamplerName::Ratio => SamplerConfig::TraceIdRatio(arg),
    }
}
