//! Glob patterns as OBI reads them (gobwas/glob without separators): `*` matches any run of
//! characters including `/`, `?` one character, `[abc]`, `[a-z]`, `[!a-z]` (or `[^a-z]`) one
//! character of a class, `{a,b}` alternatives, and `\` escapes the next character.
//!
//! Matching is iterative with one backtrack point per alternative, so it runs in
//! O(pattern x input) time whatever the pattern; braces are expanded when the glob is built
//! (at most [`MAX_ALTERNATIVES`]), so `{...}` cannot multiply the work at match time unboundedly.

use std::fmt;

/// Upper bound on the alternatives a pattern's braces may expand to.
pub const MAX_ALTERNATIVES: usize = 256;

/// A compiled glob; two globs are equal when their patterns are.
///
/// Selectors hold globs for executable paths and Kubernetes names, so the matcher never sees
/// unchecked pattern text.
#[derive(Clone)]
pub struct Glob {
    pattern: String,
    alternatives: Vec<Vec<Token>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Literal(char),
    AnyChar,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug)]
enum Piece {
    Token(Token),
    Group(Vec<Vec<Piece>>),
}

impl Glob {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut pos = 0;
        let pieces = parse_sequence(&chars, &mut pos, false)?;
        let Some(sequence) = pieces.into_iter().next() else {
            return Err("empty pattern".to_owned());
        };
        let mut alternatives = vec![Vec::new()];
        expand(&sequence, &mut alternatives)?;
        Ok(Self {
            pattern: pattern.to_owned(),
            alternatives,
        })
    }

    /// Whether the whole of `input` matches the pattern.
    pub fn matches(&self, input: &str) -> bool {
        let text: Vec<char> = input.chars().collect();
        self.alternatives
            .iter()
            .any(|tokens| match_tokens(tokens, &text))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Glob {}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// Parses until the end (top level) or the closing `}` (in a group); in a group, returns one
/// sequence per comma-separated alternative.
fn parse_sequence(
    chars: &[char],
    pos: &mut usize,
    in_group: bool,
) -> Result<Vec<Vec<Piece>>, String> {
    let mut alternatives = vec![Vec::new()];
    while *pos < chars.len() {
        let c = chars[*pos];
        *pos += 1;
        let piece = match c {
            '*' => Piece::Token(Token::AnyRun),
            '?' => Piece::Token(Token::AnyChar),
            '\\' => {
                let escaped = *chars.get(*pos).ok_or("trailing `\\`")?;
                *pos += 1;
                Piece::Token(Token::Literal(escaped))
            }
            '[' => Piece::Token(parse_class(chars, pos)?),
            '{' => Piece::Group(parse_sequence(chars, pos, true)?),
            '}' if in_group => return Ok(alternatives),
            ',' if in_group => {
                alternatives.push(Vec::new());
                continue;
            }
            c => Piece::Token(Token::Literal(c)),
        };
        alternatives.last_mut().expect("never empty").push(piece);
    }
    if in_group {
        Err("unclosed `{`".to_owned())
    } else {
        Ok(alternatives)
    }
}

fn parse_class(chars: &[char], pos: &mut usize) -> Result<Token, String> {
    let negated = matches!(chars.get(*pos), Some('!' | '^'));
    if negated {
        *pos += 1;
    }
    let mut ranges = Vec::new();
    loop {
        let mut c = *chars.get(*pos).ok_or("unclosed `[`")?;
        *pos += 1;
        if c == ']' {
            break;
        }
        if c == '\\' {
            c = *chars.get(*pos).ok_or("unclosed `[`")?;
            *pos += 1;
        }
        if chars.get(*pos) == Some(&'-') && chars.get(*pos + 1).is_some_and(|e| *e != ']') {
            let end = chars[*pos + 1];
            *pos += 2;
            if end < c {
                return Err(format!("bad range `{c}-{end}` in `[...]`"));
            }
            ranges.push((c, end));
        } else {
            ranges.push((c, c));
        }
    }
    if ranges.is_empty() {
        return Err("empty `[]`".to_owned());
    }
    Ok(Token::Class { negated, ranges })
}

/// Appends `pieces` to every partial alternative, multiplying them out at groups.
fn expand(pieces: &[Piece], partials: &mut Vec<Vec<Token>>) -> Result<(), String> {
    for piece in pieces {
        match piece {
            Piece::Token(token) => partials.iter_mut().for_each(|p| p.push(token.clone())),
            Piece::Group(alternatives) => {
                let mut next = Vec::new();
                for alternative in alternatives {
                    let mut branch = partials.clone();
                    expand(alternative, &mut branch)?;
                    next.append(&mut branch);
                    if next.len() > MAX_ALTERNATIVES {
                        return Err(format!(
                            "more than {MAX_ALTERNATIVES} alternatives in `{{...}}`"
                        ));
                    }
                }
                *partials = next;
            }
        }
    }
    Ok(())
}

fn match_one(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyChar => true,
        Token::AnyRun => false,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
        }
    }
}

/// Wildcard matching with a single backtrack point (the last `*` seen).
fn match_tokens(tokens: &[Token], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if let Some(token) = tokens.get(p) {
            if *token == Token::AnyRun {
                backtrack = Some((p, t));
                p += 1;
                continue;
            }
            if match_one(token, text[t]) {
                p += 1;
                t += 1;
                continue;
            }
        }
        match backtrack {
            Some((star, start)) => {
                p = star + 1;
                t = start + 1;
                backtrack = Some((star, start + 1));
            }
            None => return false,
        }
    }
    tokens[p..].iter().all(|t| *t == Token::AnyRun)
}
