//! Leaf-value parsers shared by every component, and [`Ctx`], which applies the
//! "environment variable over YAML key over default" rule while collecting errors.
//!
//! Every parser takes a [`Node`]: a YAML value, or the string of an environment variable
//! wrapped in `Node::Str`. One parser per setting therefore gives the same validation and the
//! same "expected ..." text whichever way the value arrived.

use std::time::Duration;

use super::{
    error::{ConfigError, Origin},
    yaml::Node,
};

/// Why a value was refused; [`Ctx`] adds where it came from and what it was.
#[derive(Debug)]
pub(super) enum Bad {
    /// Right shape, wrong value; holds what is accepted.
    Invalid(String),
    /// Wrong shape (list, mapping, ...); holds what is accepted.
    WrongType(String),
    /// A value OBI accepts that mop does not implement; holds what mop supports.
    Unsupported(String),
}

/// Result of a leaf parser.
pub(super) type Parsed<T> = Result<T, Bad>;

/// The environment lookup plus the errors found so far.
pub(super) struct Ctx<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    /// Every problem found so far, in file order then environment order.
    pub(super) errors: Vec<ConfigError>,
}

impl<'e> Ctx<'e> {
    /// A context reading variables through `env`.
    pub(super) fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            env,
            errors: Vec::new(),
        }
    }

    /// The value of an environment variable; empty counts as unset.
    pub(super) fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// Parses the YAML value at `key` (null counts as absent).
    pub(super) fn yaml<T>(
        &mut self,
        key: &str,
        node: Option<&Node>,
        parse: impl Fn(&Node) -> Parsed<T>,
    ) -> Option<T> {
        let node = node.filter(|n| !matches!(n, Node::Null))?;
        self.check(Origin::Key(key.to_owned()), node, &parse)
    }

    /// Parses the first set variable of `vars` (checking all of them).
    pub(super) fn env<T>(
        &mut self,
        vars: &[&str],
        parse: impl Fn(&Node) -> Parsed<T>,
    ) -> Option<T> {
        let mut first = None;
        for var in vars {
            if let Some(value) = self.var(var) {
                let parsed = self.check(Origin::Env((*var).to_owned()), &Node::Str(value), &parse);
                if first.is_none() {
                    first = parsed;
                }
            }
        }
        first
    }

    /// The variables of `vars` (in that order) override the YAML value at `key`; both are
    /// checked so that `config check` reports a bad file value even when it is overridden.
    pub(super) fn get<T>(
        &mut self,
        key: &str,
        node: Option<&Node>,
        vars: &[&str],
        parse: impl Fn(&Node) -> Parsed<T>,
    ) -> Option<T> {
        let from_yaml = self.yaml(key, node, &parse);
        self.env(vars, &parse).or(from_yaml)
    }

    /// Records "invalid value" for a value that parsed but fails a cross-field rule.
    pub(super) fn invalid(
        &mut self,
        origin: Origin,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) {
        self.errors.push(ConfigError::InvalidValue {
            origin,
            value: value.into(),
            expected: expected.into(),
        });
    }

    fn check<T>(
        &mut self,
        origin: Origin,
        node: &Node,
        parse: &impl Fn(&Node) -> Parsed<T>,
    ) -> Option<T> {
        match parse(node) {
            Ok(value) => Some(value),
            Err(bad) => {
                let value = node.display();
                self.errors.push(match bad {
                    Bad::Invalid(expected) => ConfigError::InvalidValue {
                        origin,
                        value,
                        expected,
                    },
                    Bad::WrongType(expected) => ConfigError::WrongType {
                        origin,
                        expected,
                        found: format!("{} `{value}`", node.kind()),
                    },
                    Bad::Unsupported(supported) => ConfigError::UnsupportedValue {
                        origin,
                        value,
                        supported,
                    },
                });
                None
            }
        }
    }
}

/// The text of a scalar, or a wrong-type error naming `expected`.
pub(super) fn scalar(node: &Node, expected: &str) -> Parsed<String> {
    node.scalar_text()
        .ok_or_else(|| Bad::WrongType(expected.to_owned()))
}

/// A non-empty string (numbers and booleans are taken as their text).
pub(super) fn string(node: &Node) -> Parsed<String> {
    let s = scalar(node, "a string")?;
    if s.trim().is_empty() {
        Err(Bad::Invalid("a non-empty string".to_owned()))
    } else {
        Ok(s)
    }
}

/// `true` or `false` (any case, also from a string).
pub(super) fn boolean(node: &Node) -> Parsed<bool> {
    let s = scalar(node, "true or false")?;
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Bad::Invalid("true or false".to_owned())),
    }
}

/// An integer within `min..=max`.
pub(super) fn integer(min: u64, max: u64) -> impl Fn(&Node) -> Parsed<u64> {
    move |node| {
        let expected = || format!("an integer from {min} to {max}");
        let n = match node {
            Node::Int(i) => u64::try_from(*i).ok(),
            Node::Str(s) => s.trim().parse::<u64>().ok(),
            _ => return Err(Bad::WrongType(expected())),
        };
        n.filter(|n| (min..=max).contains(n))
            .ok_or_else(|| Bad::Invalid(expected()))
    }
}

/// A Go-style duration (`500ms`, `5s`, `1m30s`, `1h`) within `min..=max`; bare `0` is zero.
pub(super) fn duration(min: Duration, max: Duration) -> impl Fn(&Node) -> Parsed<Duration> {
    move |node| {
        let expected = || {
            format!(
                "a duration with a unit (ns, us, ms, s, m, h) from {} to {}",
                format_duration(min),
                format_duration(max)
            )
        };
        let d = match node {
            Node::Int(0) => Some(Duration::ZERO),
            Node::Str(s) => parse_duration(s.trim()),
            Node::Int(_) | Node::Float(_) => None,
            _ => return Err(Bad::WrongType(expected())),
        };
        d.filter(|d| (min..=max).contains(d))
            .ok_or_else(|| Bad::Invalid(expected()))
    }
}

/// An integer number of milliseconds (the unit of the OpenTelemetry SDK variables).
pub(super) fn millis(min: Duration, max: Duration) -> impl Fn(&Node) -> Parsed<Duration> {
    move |node| {
        let expected = || {
            format!(
                "an integer number of milliseconds from {} to {}",
                min.as_millis(),
                max.as_millis()
            )
        };
        let ms = match node {
            Node::Int(i) => u64::try_from(*i).ok(),
            Node::Str(s) => s.trim().parse::<u64>().ok(),
            _ => return Err(Bad::WrongType(expected())),
        };
        ms.map(Duration::from_millis)
            .filter(|d| (min..=max).contains(d))
            .ok_or_else(|| Bad::Invalid(expected()))
    }
}

/// A byte count: an integer, or a number with `KiB`, `MiB` or `GiB`, within `min..=max`.
pub(super) fn byte_size(min: u64, max: u64) -> impl Fn(&Node) -> Parsed<u64> {
    move |node| {
        let expected = || {
            format!(
                "a size in bytes (or with KiB, MiB, GiB) from {} to {}",
                format_bytes(min),
                format_bytes(max)
            )
        };
        let n = match node {
            Node::Int(i) => u64::try_from(*i).ok(),
            Node::Str(s) => parse_bytes(s.trim()),
            _ => return Err(Bad::WrongType(expected())),
        };
        n.filter(|n| (min..=max).contains(n))
            .ok_or_else(|| Bad::Invalid(expected()))
    }
}

/// One of `choices` (compared ignoring ASCII case); `unsupported` are OBI values mop lacks.
pub(super) fn choice<T: Copy>(
    choices: &'static [(&'static str, T)],
    unsupported: &'static [&'static str],
) -> impl Fn(&Node) -> Parsed<T> {
    move |node| {
        let names = || {
            choices
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let s = scalar(node, &format!("one of {}", names()))?;
        let s = s.trim();
        if let Some((_, v)) = choices.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            Ok(*v)
        } else if unsupported.iter().any(|u| u.eq_ignore_ascii_case(s)) {
            Err(Bad::Unsupported(names()))
        } else {
            Err(Bad::Invalid(format!("one of {}", names())))
        }
    }
}

/// A list of strings: a YAML sequence of scalars, or a comma-separated string.
pub(super) fn string_list(node: &Node) -> Parsed<Vec<String>> {
    let items = match node {
        Node::Seq(items) => items
            .iter()
            .map(|i| scalar(i, "a list of strings"))
            .collect::<Result<Vec<_>, _>>()?,
        Node::Str(s) => s.split(',').map(str::to_owned).collect(),
        _ => return Err(Bad::WrongType("a list of strings".to_owned())),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Histogram bucket boundaries: a non-empty, strictly increasing list of finite numbers.
pub(super) fn buckets(node: &Node) -> Parsed<Vec<f64>> {
    const EXPECTED: &str = "a non-empty list of strictly increasing finite numbers";
    let Node::Seq(items) = node else {
        return Err(Bad::WrongType(EXPECTED.to_owned()));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        #[expect(
            clippy::cast_precision_loss,
            reason = "bucket bounds are small integers"
        )]
        let x = match item {
            Node::Int(i) => *i as f64,
            Node::Float(x) => *x,
            Node::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| Bad::Invalid(EXPECTED.to_owned()))?,
            _ => return Err(Bad::Invalid(EXPECTED.to_owned())),
        };
        if !x.is_finite() || out.last().is_some_and(|last| *last >= x) {
            return Err(Bad::Invalid(EXPECTED.to_owned()));
        }
        out.push(x);
    }
    if out.is_empty() {
        Err(Bad::Invalid(EXPECTED.to_owned()))
    } else {
        Ok(out)
    }
}

/// Parses Go's `time.ParseDuration` syntax, without a sign; `0` alone is allowed.
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut nanos = int.checked_mul(scale)?;
        let mut place = scale;
        for digit in frac.bytes() {
            place /= 10;
            nanos += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(nanos)?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Writes a duration in the largest unit that divides it exactly: `5m`, `90s`, `1500ms`.
pub(super) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, scale) in [
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos.is_multiple_of(scale) {
            return format!("{}{unit}", nanos / scale);
        }
    }
    format!("{nanos}ns")
}

fn parse_bytes(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// Writes a byte count with the largest binary unit that divides it exactly.
pub(super) fn format_bytes(n: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n != 0 && n.is_multiple_of(scale) {
            return format!("{}{unit}", n / scale);
        }
    }
    n.to_string()
}
