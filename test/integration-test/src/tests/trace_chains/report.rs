//! Sorting a scenario's spans into chains (one per request, one span per hop) and judging
//! every link: exact, missing or wrong, complete chains in percent.

use std::{collections::HashMap, fmt::Write as _};

use super::super::assert_count;
use crate::span::{self, Span};

/// One hop of a chain: the spans of `kind` printed for `pids`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hop<'a> {
    /// For messages: `curl client`, `frontend server`, ...
    pub name: &'a str,
    /// `client` or `server`.
    pub kind: &'a str,
    /// The processes whose spans these are.
    pub pids: &'a [u32],
}

impl Hop<'_> {
    fn holds(&self, s: &Span) -> bool {
        s.kind == self.kind && self.pids.contains(&s.pid)
    }
}

/// What the first span of every chain hangs from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Root<'a> {
    /// Nothing: it is the root of a new trace, one trace per request.
    New,
    /// The caller's span named by an incoming header.
    Remote {
        /// The header's trace id.
        trace_id: &'a str,
        /// The header's span id.
        parent_span_id: &'a str,
    },
}

/// The spans of one request, one per hop, in hop order.
pub(crate) type Chain = Vec<Span>;

/// The query string of a span: `url.query` of a server span, the part of `url.full` after `?`
/// of a client span.
pub(crate) fn query_of(s: &Span) -> Option<&str> {
    if s.kind == "server" {
        s.attr("url.query").and_then(|v| v.as_str())
    } else {
        s.attr("url.full")
            .and_then(|v| v.as_str())
            .and_then(|u| u.split_once('?'))
            .map(|(_, q)| q)
    }
}

/// Sorts `spans` into one chain per query of `queries` (each request's unique query string,
/// passed on unchanged by every hop), asserting that every hop printed exactly one span per
/// query and that no other span of these hops was printed.
pub(crate) fn chains_by_query(spans: &[Span], hops: &[Hop<'_>], queries: &[String]) -> Vec<Chain> {
    let mut unplaced: Vec<&Span> = spans
        .iter()
        .filter(|s| hops.iter().any(|h| h.holds(s)))
        .collect();
    let chains = queries
        .iter()
        .map(|q| {
            hops.iter()
                .map(|hop| {
                    let found: Vec<&Span> = spans
                        .iter()
                        .filter(|s| hop.holds(s) && query_of(s) == Some(q.as_str()))
                        .collect();
                    assert_eq!(
                        found.len(),
                        1,
                        "expected one {} span for query {q:?}, got {}:\nall spans:\n{}",
                        hop.name,
                        found.len(),
                        span::show(spans)
                    );
                    unplaced.retain(|s| s.span_id != found[0].span_id);
                    found[0].clone()
                })
                .collect()
        })
        .collect();
    assert!(
        unplaced.is_empty(),
        "spans that belong to no request of the test:\n{}",
        span::show(&unplaced.into_iter().cloned().collect::<Vec<_>>())
    );
    chains
}

/// Sorts `spans` into `n` chains by start order, for requests sent strictly one after another
/// whose spans carry nothing unique (gRPC: one method, no query). Asserts each hop printed
/// exactly `n` spans.
pub(crate) fn chains_by_order(spans: &[Span], hops: &[Hop<'_>], n: usize) -> Vec<Chain> {
    let per_hop: Vec<Vec<Span>> = hops
        .iter()
        .map(|hop| {
            let mut of_hop: Vec<Span> = spans.iter().filter(|s| hop.holds(s)).cloned().collect();
            of_hop.sort_by_key(|s| s.start_unix_nano);
            assert_count(&of_hop, n, hop.name);
            of_hop
        })
        .collect();
    (0..n)
        .map(|i| per_hop.iter().map(|spans| spans[i].clone()).collect())
        .collect()
}

/// How the links into one hop turned out over all chains.
#[derive(Debug, Default)]
pub(crate) struct LinkTally {
    /// Parent is exactly the previous hop's span, same trace.
    pub exact: usize,
    /// No parent: the span started a trace of its own.
    pub missing: usize,
    /// Another parent (or the right parent id in another trace): `(child, parent id)`.
    pub wrong: Vec<(Span, String)>,
}

/// The outcome of a scenario: per-link tallies and complete chains.
#[derive(Debug)]
pub(crate) struct ChainReport {
    /// Scenario name.
    pub label: String,
    /// Requests sent.
    pub requests: usize,
    /// Chains whose every link is exact and whose root is as expected.
    pub complete: usize,
    /// First span parented as [`Root`] says.
    pub roots_ok: usize,
    /// `links[i]` tallies the link from hop `i` to hop `i + 1`.
    pub links: Vec<LinkTally>,
    /// Every chain, for messages.
    pub chains: Vec<Chain>,
    hop_names: Vec<String>,
    root: RootSpec,
}

impl ChainReport {
    /// Complete chains in percent.
    #[expect(clippy::cast_precision_loss, reason = "request counts are tiny")]
    pub(crate) fn percent_complete(&self) -> f64 {
        100.0 * self.complete as f64 / self.requests.max(1) as f64
    }

    /// One line: complete chains and each link's tally.
    pub(crate) fn summary(&self) -> String {
        let mut line = format!(
            "trace chains [{}]: {}/{} complete ({:.1}%); roots as expected {}/{}",
            self.label,
            self.complete,
            self.requests,
            self.percent_complete(),
            self.roots_ok,
            self.requests
        );
        for (i, l) in self.links.iter().enumerate() {
            let _ = write!(
                line,
                "; {} -> {}: {} exact, {} missing, {} wrong",
                self.hop_names[i],
                self.hop_names[i + 1],
                l.exact,
                l.missing,
                l.wrong.len()
            );
        }
        line
    }

    /// Panics, showing the broken chains, unless every chain is complete.
    pub(crate) fn assert_all_complete(&self) {
        if self.complete == self.requests {
            return;
        }
        panic!("{}\nbroken chains:\n{}", self.summary(), self.show_broken());
    }

    fn show_broken(&self) -> String {
        self.chains
            .iter()
            .filter(|c| !chain_complete(c, &self.root))
            .map(|c| span::show(c))
            .collect::<Vec<_>>()
            .join("\n--\n")
    }
}

/// How the first span must hang: kept on the report for [`ChainReport::show_broken`].
type RootSpec = Option<(String, String)>;

fn root_ok(first: &Span, root: &RootSpec) -> bool {
    match root {
        None => first.parent_span_id.is_empty(),
        Some((trace, parent)) => first.trace_id == *trace && first.parent_span_id == *parent,
    }
}

fn chain_complete(chain: &Chain, root: &RootSpec) -> bool {
    root_ok(&chain[0], root) && chain.windows(2).all(|w| w[1].is_child_of(&w[0]))
}

/// Checks every link of every chain; prints the summary on stderr (shown with
/// `--nocapture` and in failure output).
pub(crate) fn analyse(
    label: &str,
    chains: Vec<Chain>,
    hops: &[Hop<'_>],
    root: Root<'_>,
) -> ChainReport {
    let root: RootSpec = match root {
        Root::New => None,
        Root::Remote {
            trace_id,
            parent_span_id,
        } => Some((trace_id.to_owned(), parent_span_id.to_owned())),
    };
    let mut links: Vec<LinkTally> = (1..hops.len()).map(|_| LinkTally::default()).collect();
    let mut complete = 0;
    let mut roots_ok = 0;
    for chain in &chains {
        roots_ok += usize::from(root_ok(&chain[0], &root));
        complete += usize::from(chain_complete(chain, &root));
        for (i, w) in chain.windows(2).enumerate() {
            let (parent, child) = (&w[0], &w[1]);
            if child.is_child_of(parent) {
                links[i].exact += 1;
            } else if child.parent_span_id.is_empty() {
                links[i].missing += 1;
            } else {
                links[i]
                    .wrong
                    .push((child.clone(), child.parent_span_id.clone()));
            }
        }
    }
    if root.is_none() {
        // One trace per request: no two chains share a trace.
        let mut traces: Vec<&str> = chains.iter().map(|c| c[0].trace_id.as_str()).collect();
        traces.sort_unstable();
        traces.dedup();
        assert_eq!(
            traces.len(),
            chains.len(),
            "[{label}] requests share a trace:\n{}",
            chains
                .iter()
                .map(|c| span::show(c))
                .collect::<Vec<_>>()
                .join("\n--\n")
        );
    }
    let report = ChainReport {
        label: label.to_owned(),
        requests: chains.len(),
        complete,
        roots_ok,
        links,
        chains,
        hop_names: hops.iter().map(|h| h.name.to_owned()).collect(),
        root,
    };
    eprintln!("{}", report.summary());
    report
}

/// Asserts that every wrong parent of link `link` (into hop `link + 1`) is a span of hop
/// `link` that was being served when the child started (the event-loop heuristic picked
/// another request in flight on that thread), and that no link is missing.
pub(crate) fn assert_wrong_parents_were_in_flight(report: &ChainReport, link: usize) {
    let tally = &report.links[link];
    assert_eq!(
        tally.missing,
        0,
        "{}\ncalls made while serving got no parent at all",
        report.summary()
    );
    let parents: HashMap<&str, &Span> = report
        .chains
        .iter()
        .map(|c| (c[link].span_id.as_str(), &c[link]))
        .collect();
    for (child, parent_id) in &tally.wrong {
        let Some(parent) = parents.get(parent_id.as_str()) else {
            panic!(
                "{}\nparent {parent_id} of this span is no {} span of the test:\n{child}",
                report.summary(),
                report.hop_names[link]
            );
        };
        assert!(
            parent.start_unix_nano <= child.start_unix_nano
                && child.start_unix_nano <= parent.end_unix_nano,
            "{}\nthe wrong parent was not in flight when the call started:\nparent {parent}\nchild {child}",
            report.summary()
        );
        assert_eq!(
            parent.trace_id,
            child.trace_id,
            "{}\na child outside its parent's trace:\nparent {parent}\nchild {child}",
            report.summary()
        );
    }
}

/// Asserts that link `link` is exact in every chain (a same-node link does not depend on
/// timing: it is matched on the connection).
pub(crate) fn assert_link_exact(report: &ChainReport, link: usize) {
    let tally = &report.links[link];
    assert_eq!(
        tally.exact,
        report.requests,
        "{}\nnot exact into {}:\n{}",
        report.summary(),
        report.hop_names[link + 1],
        tally
            .wrong
            .iter()
            .map(|(s, _)| s.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
