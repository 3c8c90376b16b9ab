//! Naming an instrumented process: its OpenTelemetry resource.
//!
//! Service name, in order: the agent-wide `OTEL_SERVICE_NAME`, the matched entry's `name`, the
//! target's own `OTEL_SERVICE_NAME`, `service.name` in its `OTEL_RESOURCE_ATTRIBUTES`, the
//! Pod's names when it runs in one (see [`super::kube::naming`]), then the executable's base
//! name.

use std::collections::HashMap;

use super::{
    kube::{PodView, naming},
    matcher::Selection,
};
use crate::span::{AttrValue, ServiceResource};

/// Environment variables of a target that shape its resource.
pub const IDENTITY_ENV: &[&str] = &[
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SERVICE_NAMESPACE",
];

/// Facts shared by every resource this agent makes.
#[derive(Clone, Debug)]
pub struct IdentityContext {
    /// `host.name`.
    pub host_name: String,
    /// The agent-wide service name override (`OTEL_SERVICE_NAME` of the agent).
    pub service_name_override: Option<String>,
}

/// What is known about the process being named.
#[derive(Clone, Copy, Debug)]
pub struct ProcessIdentity<'a> {
    /// Host pid.
    pub pid: u32,
    /// Full executable path.
    pub exe: &'a str,
    /// The identity variables of its environment ([`IDENTITY_ENV`]).
    pub environ: &'a HashMap<String, String>,
    /// Its Pod, when it runs in a known one.
    pub pod: Option<PodView<'a>>,
}

/// Splits `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, values percent-encoded) into pairs;
/// malformed members are skipped, as the specification asks.
pub fn parse_resource_attributes(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|member| {
            let (k, v) = member.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds the resource of a process.
pub fn resource(
    ctx: &IdentityContext,
    p: &ProcessIdentity<'_>,
    selection: &Selection<'_>,
) -> ServiceResource {
    let mut from_env: Vec<(String, String)> = p
        .environ
        .get("OTEL_RESOURCE_ATTRIBUTES")
        .map(|v| parse_resource_attributes(v))
        .unwrap_or_default();
    let mut take = |key: &str| -> Option<String> {
        let i = from_env.iter().position(|(k, _)| k == key)?;
        Some(from_env.remove(i).1)
    };
    let env_name = take("service.name");
    let env_namespace = take("service.namespace");
    let env_instance = take("service.instance.id");
    let exe_name = p.exe.rsplit('/').next().unwrap_or(p.exe).to_owned();
    let selector = selection.selector;
    let service_name = ctx
        .service_name_override
        .clone()
        .or_else(|| selector.and_then(|s| s.name.clone()))
        .or_else(|| p.environ.get("OTEL_SERVICE_NAME").cloned())
        .or(env_name)
        .filter(|n| !n.is_empty())
        .or_else(|| p.pod.map(|pod| naming::service_name(&pod).to_owned()))
        .unwrap_or_else(|| exe_name.clone());
    let service_namespace = selector
        .and_then(|s| s.namespace.clone())
        .or_else(|| p.environ.get("OTEL_SERVICE_NAMESPACE").cloned())
        .or(env_namespace)
        .or_else(|| p.pod.map(|pod| naming::service_namespace(&pod).to_owned()));
    let service_instance_id = env_instance
        .or_else(|| p.pod.map(|pod| naming::service_instance_id(&pod)))
        .unwrap_or_else(|| format!("{}-{}", ctx.host_name, p.pid));
    let mut attributes: Vec<(String, AttrValue)> = vec![
        (
            "host.name".to_owned(),
            AttrValue::Str(ctx.host_name.clone()),
        ),
        ("process.pid".to_owned(), AttrValue::Int(i64::from(p.pid))),
        (
            "process.executable.name".to_owned(),
            AttrValue::Str(exe_name),
        ),
        (
            "process.executable.path".to_owned(),
            AttrValue::Str(p.exe.to_owned()),
        ),
        (
            "telemetry.sdk.name".to_owned(),
            AttrValue::Str("mop-agent".to_owned()),
        ),
        (
            "telemetry.sdk.version".to_owned(),
            AttrValue::Str(env!("CARGO_PKG_VERSION").to_owned()),
        ),
    ];
    // The target's own attributes first, then its Pod's: the process knows best.
    let from_pod = p
        .pod
        .map(|pod| naming::attributes(&pod))
        .unwrap_or_default();
    let from_env = from_env.into_iter().map(|(k, v)| (k, AttrValue::Str(v)));
    for (k, v) in from_env.chain(from_pod) {
        if !attributes.iter().any(|(have, _)| *have == k) {
            attributes.push((k, v));
        }
    }
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    ServiceResource {
        service_name,
        service_namespace,
        service_instance_id,
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::discovery::Selector;

    fn ctx(override_name: Option<&str>) -> IdentityContext {
        IdentityContext {
            host_name: "node1".into(),
            service_name_override: override_name.map(str::to_owned),
        }
    }

    #[test]
    fn defaults_to_the_executable_name() {
        let env = HashMap::new();
        let p = ProcessIdentity {
            pid: 7,
            exe: "/usr/bin/python3.11",
            environ: &env,
            pod: None,
        };
        let r = resource(&ctx(None), &p, &Selection { selector: None });
        assert_eq!(r.service_name, "python3.11");
        assert_eq!(r.service_instance_id, "node1-7");
        assert!(
            r.attributes
                .contains(&("process.pid".into(), AttrValue::Int(7)))
        );
        assert!(r.attributes.contains(&(
            "telemetry.sdk.name".into(),
            AttrValue::Str("mop-agent".into())
        )));
    }

    #[test]
    fn follows_the_precedence_order() {
        let env = HashMap::from([
            (
                "OTEL_RESOURCE_ATTRIBUTES".to_owned(),
                "service.name=from-attrs,service.namespace=shop,deployment.environment=prod%2Ceu"
                    .to_owned(),
            ),
            ("OTEL_SERVICE_NAME".to_owned(), "from-env".to_owned()),
        ]);
        let p = ProcessIdentity {
            pid: 1,
            exe: "/app/server",
            environ: &env,
            pod: None,
        };
        let none = Selection { selector: None };
        let r = resource(&ctx(None), &p, &none);
        assert_eq!(r.service_name, "from-env");
        assert_eq!(r.service_namespace.as_deref(), Some("shop"));
        assert!(r.attributes.contains(&(
            "deployment.environment".into(),
            AttrValue::Str("prod,eu".into())
        )));
        let named = Selector {
            name: Some("from-selector".into()),
            ..Selector::default()
        };
        let r = resource(
            &ctx(None),
            &p,
            &Selection {
                selector: Some(&named),
            },
        );
        assert_eq!(r.service_name, "from-selector");
        let r = resource(
            &ctx(Some("global")),
            &p,
            &Selection {
                selector: Some(&named),
            },
        );
        assert_eq!(r.service_name, "global");
        let env = HashMap::from([(
            "OTEL_RESOURCE_ATTRIBUTES".to_owned(),
            "service.name=from-attrs,bad,=x".to_owned(),
        )]);
        let p = ProcessIdentity {
            pid: 1,
            exe: "/app/server",
            environ: &env,
            pod: None,
        };
        assert_eq!(resource(&ctx(None), &p, &none).service_name, "from-attrs");
    }
}
