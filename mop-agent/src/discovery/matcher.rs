//! Deciding whether a process is instrumented: `instrument` entries, exclusions, defaults.

use super::kube::{PodView, naming};
use crate::config::discovery::{DiscoveryConfig, Selector};

/// What discovery knows about a process when it decides.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// Full executable path.
    pub exe: &'a str,
    /// TCP ports the process listens on.
    pub ports: &'a [u16],
    /// Its Pod, when Kubernetes metadata is on and the process runs in a known Pod.
    pub pod: Option<PodView<'a>>,
}

/// Why a process is instrumented: the entry it matched, or the no-selector default.
#[derive(Clone, Copy, Debug)]
pub struct Selection<'c> {
    /// The `instrument` entry that matched; `None` under the "every listening process" default.
    pub selector: Option<&'c Selector>,
}

/// True when every field the selector sets matches (and it sets at least one that can be
/// evaluated here). Kubernetes fields never match a process outside a known Pod.
fn selector_matches(sel: &Selector, c: &Candidate<'_>) -> bool {
    let mut constrained = false;
    if sel.uses_kubernetes() {
        constrained = true;
        if !c.pod.is_some_and(|pod| naming::selector_matches(sel, &pod)) {
            return false;
        }
    }
    if let Some(ports) = &sel.open_ports {
        constrained = true;
        if !c.ports.iter().any(|p| ports.contains(*p)) {
            return false;
        }
    }
    if let Some(glob) = &sel.exe_path {
        constrained = true;
        if !glob.matches(c.exe) {
            return false;
        }
    }
    constrained
}

/// The selection of a process, or `None` when it is not to be instrumented.
pub fn select<'c>(cfg: &'c DiscoveryConfig, c: &Candidate<'_>) -> Option<Selection<'c>> {
    let excluded = cfg
        .exclude_instrument
        .iter()
        .chain(&cfg.default_exclude_instrument)
        .any(|s| selector_matches(s, c));
    if excluded {
        return None;
    }
    if cfg.instrument.is_empty() {
        return (!c.ports.is_empty()).then_some(Selection { selector: None });
    }
    cfg.instrument
        .iter()
        .find(|s| selector_matches(s, c))
        .map(|s| Selection { selector: Some(s) })
}

/// True when a decision may depend on listening ports (so fds must be scanned).
pub fn needs_ports(cfg: &DiscoveryConfig) -> bool {
    cfg.instrument.is_empty()
        || cfg
            .instrument
            .iter()
            .chain(&cfg.exclude_instrument)
            .chain(&cfg.default_exclude_instrument)
            .any(|s| s.open_ports.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{discovery::PortSet, glob::Glob};

    fn sel(ports: Option<&str>, exe: Option<&str>) -> Selector {
        Selector {
            open_ports: ports.map(|p| PortSet::parse(p).unwrap()),
            exe_path: exe.map(|g| Glob::new(g).unwrap()),
            ..Selector::default()
        }
    }

    fn cfg(instrument: Vec<Selector>, exclude: Vec<Selector>) -> DiscoveryConfig {
        DiscoveryConfig {
            instrument,
            exclude_instrument: exclude,
            ..DiscoveryConfig::default()
        }
    }

    const NGINX: Candidate<'static> = Candidate {
        exe: "/usr/sbin/nginx",
        ports: &[8080],
        pod: None,
    };
    const CURL: Candidate<'static> = Candidate {
        exe: "/usr/bin/curl",
        ports: &[],
        pod: None,
    };

    #[test]
    fn every_field_of_an_entry_must_match() {
        let c = cfg(vec![sel(Some("8000-8999"), Some("*nginx"))], vec![]);
        assert!(select(&c, &NGINX).is_some());
        let c = cfg(vec![sel(Some("9000"), Some("*nginx"))], vec![]);
        assert!(select(&c, &NGINX).is_none());
        let c = cfg(vec![sel(None, Some("*/curl"))], vec![]);
        assert!(select(&c, &CURL).is_some());
        assert!(select(&c, &NGINX).is_none());
    }

    #[test]
    fn any_entry_may_match_and_exclusions_win() {
        let c = cfg(
            vec![sel(Some("1"), None), sel(None, Some("*/curl"))],
            vec![sel(None, Some("/usr/bin/*"))],
        );
        assert!(select(&c, &CURL).is_none());
        let c = cfg(
            vec![sel(Some("1"), None), sel(None, Some("*/curl"))],
            vec![],
        );
        assert!(select(&c, &CURL).is_some());
    }

    #[test]
    fn no_selector_means_every_listener_except_defaults() {
        let c = cfg(vec![], vec![]);
        assert!(select(&c, &NGINX).unwrap().selector.is_none());
        assert!(select(&c, &CURL).is_none());
        let agent = Candidate {
            exe: "/opt/mop/mop-agent",
            ports: &[9400],
            pod: None,
        };
        assert!(select(&c, &agent).is_none());
        assert!(needs_ports(&c));
        assert!(!needs_ports(&cfg(vec![sel(None, Some("*"))], vec![])));
    }

    #[test]
    fn kubernetes_selectors_do_not_match_off_kubernetes() {
        let k = Selector {
            k8s_namespace: Some(Glob::new("*").unwrap()),
            ..Selector::default()
        };
        assert!(select(&cfg(vec![k], vec![]), &NGINX).is_none());
    }
}
