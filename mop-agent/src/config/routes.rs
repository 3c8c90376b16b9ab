//! `routes`: how `http.route` is derived from request paths (OBI's routes decorator), with the
//! pattern matcher and the heuristic used for unmatched paths.
//!
//! OBI keys: `patterns`, `ignored_patterns`, `ignore_mode`, `unmatched`, `wildcard_char`.
//! mop extension: `max_routes_per_service` (distinct routes kept per service before new
//! unmatched ones collapse to the wildcard route; enforced by the metrics stage).

use serde::Deserialize;

use super::{
    value::{self, Bad, Ctx, Parsed},
    yaml::{Node, map, text},
};

/// Route reported for unmatched paths in `wildcard` mode, as in OBI.
pub const WILDCARD_ROUTE: &str = "/**";
/// Default of `routes.max_routes_per_service`.
pub const DEFAULT_MAX_ROUTES_PER_SERVICE: usize = 1000;

/// Route derivation, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesConfig {
    /// Patterns tried in order; the first that matches gives `http.route`.
    pub patterns: Vec<RoutePattern>,
    /// Paths matching any of these are dropped (see `ignore_mode`).
    pub ignored_patterns: Vec<RoutePattern>,
    /// What dropping an ignored path means.
    pub ignore_mode: IgnoreMode,
    /// What to report when no pattern matches.
    pub unmatched: UnmatchedRoutes,
    /// Replaces id-like segments in `heuristic` mode (default `*`).
    pub wildcard_char: char,
    /// Cap on distinct routes per service (mop extension).
    pub max_routes_per_service: usize,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            ignored_patterns: Vec::new(),
            ignore_mode: IgnoreMode::All,
            unmatched: UnmatchedRoutes::Heuristic,
            wildcard_char: '*',
            max_routes_per_service: DEFAULT_MAX_ROUTES_PER_SERVICE,
        }
    }
}

/// What to do with paths that match no pattern (OBI's `routes.unmatched`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmatchedRoutes {
    /// Replace id-like segments with `wildcard_char` (default).
    Heuristic,
    /// Use the path itself (high cardinality).
    Path,
    /// Report [`WILDCARD_ROUTE`].
    Wildcard,
    /// Leave `http.route` out.
    Unset,
}

impl UnmatchedRoutes {
    const CHOICES: &[(&str, Self)] = &[
        ("heuristic", Self::Heuristic),
        ("path", Self::Path),
        ("wildcard", Self::Wildcard),
        ("unset", Self::Unset),
        ("", Self::Wildcard),
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("heuristic", |(n, _)| n)
    }
}

/// Which signals drop events whose path matches `ignored_patterns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreMode {
    /// Neither spans nor metrics (default).
    All,
    /// Drop spans only; metrics still count the request.
    Traces,
    /// Drop metrics only; spans are still exported.
    Metrics,
}

impl IgnoreMode {
    const CHOICES: &[(&str, Self)] = &[
        ("all", Self::All),
        ("traces", Self::Traces),
        ("metrics", Self::Metrics),
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("all", |(n, _)| n)
    }
}

/// A route pattern such as `/users/{id}`, `/users/:id/cart` or `/static/*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePattern {
    pattern: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}` or `:name`: any one non-empty segment.
    Param,
    /// `*`: any one segment, or anything below when last.
    Wildcard,
}

impl RoutePattern {
    /// Parses a pattern; it must start with `/` and name its parameters.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err("must start with `/`".to_owned());
        };
        let mut segments = Vec::new();
        for seg in rest.split('/').filter(|s| !s.is_empty()) {
            let segment = if seg == "*" {
                Segment::Wildcard
            } else if let Some(name) = seg.strip_prefix(':') {
                param_name(name, seg)?
            } else if let Some(inner) = seg.strip_prefix('{') {
                param_name(
                    inner
                        .strip_suffix('}')
                        .ok_or_else(|| format!("unclosed `{{` in `{seg}`"))?,
                    seg,
                )?
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "a parameter must be a whole segment, like `{{id}}`, not `{seg}`"
                ));
            } else {
                Segment::Literal(seg.to_owned())
            };
            segments.push(segment);
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            segments,
        })
    }

    /// The pattern as written; this is the `http.route` value.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `path` (without query string) matches.
    pub fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/').filter(|s| !s.is_empty());
        for (i, segment) in self.segments.iter().enumerate() {
            let last = i + 1 == self.segments.len();
            match (segment, parts.next()) {
                (Segment::Wildcard, _) if last => return true,
                (Segment::Wildcard | Segment::Param, Some(_)) => {}
                (Segment::Literal(lit), Some(part)) if lit == part => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

fn param_name(name: &str, seg: &str) -> Result<Segment, String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        Ok(Segment::Param)
    } else {
        Err(format!(
            "bad parameter `{seg}`: write `{{name}}` or `:name`"
        ))
    }
}

impl RoutesConfig {
    /// The `http.route` for a request path, or `None` when it should be left out.
    pub fn route_for(&self, path: &str) -> Option<String> {
        if let Some(p) = self.patterns.iter().find(|p| p.matches(path)) {
            return Some(p.pattern.clone());
        }
        match self.unmatched {
            UnmatchedRoutes::Heuristic => Some(heuristic_route(path, self.wildcard_char)),
            UnmatchedRoutes::Path => Some(path.to_owned()),
            UnmatchedRoutes::Wildcard => Some(WILDCARD_ROUTE.to_owned()),
            UnmatchedRoutes::Unset => None,
        }
    }

    /// Whether a path matches `ignored_patterns`; `ignore_mode` says what to drop.
    pub fn is_ignored(&self, path: &str) -> bool {
        self.ignored_patterns.iter().any(|p| p.matches(path))
    }
}

/// Replaces id-like segments (digits, symbols, or letters that do not read like a word)
/// with `wildcard`: `/users/123/orders/aZx9Qk` becomes `/users/*/orders/*`.
pub fn heuristic_route(path: &str, wildcard: char) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if looks_like_id(segment) {
            out.push(wildcard);
        } else {
            out.push_str(segment);
        }
    }
    out
}

fn looks_like_id(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    if !segment
        .chars()
        .all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_')
    {
        return true;
    }
    // Letters only: ids have no vowels, long consonant runs, or case changes mid-word.
    segment.split(['-', '_']).any(|word| {
        let lower = word.to_ascii_lowercase();
        let vowels = lower.chars().filter(|c| "aeiouy".contains(*c)).count();
        let mut run = 0;
        let max_run = lower.chars().fold(0, |max, c| {
            run = if "aeiouy".contains(c) { 0 } else { run + 1 };
            max.max(run)
        });
        let case_changes = word
            .as_bytes()
            .windows(2)
            .filter(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase())
            .count();
        (word.len() > 3 && vowels == 0) || max_run > 4 || case_changes > 1 || word.len() > 24
    })
}

fn pattern(node: &Node) -> Parsed<RoutePattern> {
    const EXPECTED: &str = "a route pattern like /users/{id} or /users/:id";
    let s = value::scalar(node, EXPECTED)?;
    RoutePattern::parse(s.trim()).map_err(|e| Bad::Invalid(format!("{EXPECTED} ({e})")))
}

fn pattern_list(key: &str, node: Option<&Node>, ctx: &mut Ctx<'_>) -> Vec<RoutePattern> {
    let items = match node {
        None | Some(Node::Null) => return Vec::new(),
        Some(Node::Seq(items)) => items.clone(),
        Some(Node::Str(s)) => s
            .split(',')
            .map(|p| Node::Str(p.trim().to_owned()))
            .collect(),
        Some(other) => {
            ctx.yaml(key, Some(other), |_| {
                Err::<(), _>(Bad::WrongType("a list of route patterns".to_owned()))
            });
            return Vec::new();
        }
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| ctx.yaml(&format!("{key}[{i}]"), Some(item), pattern))
        .collect()
}

fn wildcard_char(node: &Node) -> Parsed<char> {
    let s = value::scalar(node, "a single character")?;
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !c.is_whitespace() && c != '/' => Ok(c),
        _ => Err(Bad::Invalid("a single character other than `/`".to_owned())),
    }
}

/// The `routes` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRoutes {
    patterns: Option<Node>,
    ignored_patterns: Option<Node>,
    ignore_mode: Option<Node>,
    unmatched: Option<Node>,
    wildcard_char: Option<Node>,
    max_routes_per_service: Option<Node>,
}

/// Validates `routes`.
pub(super) fn build(raw: &RawRoutes, ctx: &mut Ctx<'_>) -> RoutesConfig {
    let d = RoutesConfig::default();
    // `unmatched: ''` is explicitly `wildcard` in OBI, so it is not treated as absent.
    let unmatched = match &raw.unmatched {
        Some(Node::Str(s)) if s.is_empty() => Some(UnmatchedRoutes::Wildcard),
        other => ctx.yaml(
            "routes.unmatched",
            other.as_ref(),
            value::choice(&UnmatchedRoutes::CHOICES[..4], &["low-cardinality"]),
        ),
    };
    RoutesConfig {
        patterns: pattern_list("routes.patterns", raw.patterns.as_ref(), ctx),
        ignored_patterns: pattern_list(
            "routes.ignored_patterns",
            raw.ignored_patterns.as_ref(),
            ctx,
        ),
        ignore_mode: ctx
            .yaml(
                "routes.ignore_mode",
                raw.ignore_mode.as_ref(),
                value::choice(IgnoreMode::CHOICES, &[]),
            )
            .unwrap_or(d.ignore_mode),
        unmatched: unmatched.unwrap_or(d.unmatched),
        wildcard_char: ctx
            .yaml(
                "routes.wildcard_char",
                raw.wildcard_char.as_ref(),
                wildcard_char,
            )
            .unwrap_or(d.wildcard_char),
        max_routes_per_service: ctx
            .yaml(
                "routes.max_routes_per_service",
                raw.max_routes_per_service.as_ref(),
                value::integer(1, 1_000_000),
            )
            .map_or(d.max_routes_per_service, |n| n as usize),
    }
}

impl RoutesConfig {
    /// The effective `routes` section.
    pub(super) fn to_node(&self) -> Node {
        let list =
            |v: &[RoutePattern]| Some(Node::Seq(v.iter().map(|p| text(p.as_str())).collect()));
        map([
            ("patterns", list(&self.patterns)),
            ("ignored_patterns", list(&self.ignored_patterns)),
            ("ignore_mode", Some(text(self.ignore_mode.as_str()))),
            ("unmatched", Some(text(self.unmatched.as_str()))),
            ("wildcard_char", Some(text(self.wildcard_char.to_string()))),
            (
                "max_routes_per_service",
                Some(Node::Int(self.max_routes_per_service as i128)),
            ),
        ])
    }
}
