//! Variable substitution as Docker does it in ADD, COPY, ENV, EXPOSE, FROM,
//! LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR (and ARG defaults): `$VAR`,
//! `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`,
//! `${VAR+alt}`, `${VAR:?message}`; quotes are removed, text in single
//! quotes is taken as-is, and the escape character makes the next
//! character literal (`\$HOME` is `$HOME`). Unset variables expand to
//! nothing. RUN, CMD and ENTRYPOINT are left to the shell.

use std::iter::Peekable;
use std::str::Chars;

/// Why a word could not be substituted (a message without a line: the
/// caller knows the line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ExpandError {
    /// A `'` with no closing `'`.
    #[error("unterminated single quote")]
    SingleQuote,
    /// A `"` with no closing `"`.
    #[error("unterminated double quote")]
    DoubleQuote,
    /// The word ends inside the word of a `${VAR:-word}` form.
    #[error("missing '}}' in a ${{...}} substitution")]
    UnclosedWord,
    /// `${` not followed by a variable name.
    #[error("bad substitution: ${{ must be followed by a variable name")]
    NoName,
    /// The word ends right after `${VAR`.
    #[error("missing '}}' after ${{{name}")]
    UnclosedName {
        /// The variable.
        name: String,
    },
    /// An operator other than `-`, `+` or `?` (with or without `:`).
    #[error("unsupported substitution ${{{name}{}{op}...}}; use :-, -, :+, +, :? or ?", if *.colon { ":" } else { "" })]
    Unsupported {
        /// The variable.
        name: String,
        /// Whether a `:` came before the operator.
        colon: bool,
        /// The operator found.
        op: char,
    },
    /// `${VAR:?message}` (or `?`) with the variable unset (or empty).
    #[error("{name}: {}", if .message.is_empty() { "is not set" } else { .message.as_str() })]
    Required {
        /// The variable.
        name: String,
        /// The message written after `?`; empty when none was.
        message: String,
    },
}

/// Expands one word. `lookup` gives a variable's value, `None` when unset;
/// the error is a message without a line (the caller knows the line).
pub(crate) fn expand(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut it = word.chars().peekable();
    let out = Expander {
        escape,
        lookup,
        raw: false,
    }
    .run(&mut it, None)?;
    Ok(out)
}

/// Expands the content of a COPY/ADD heredoc, as BuildKit does
/// (`SkipProcessQuotes`): `$VAR` and `${...}` forms are substituted, quotes
/// are ordinary characters and stay, and a backslash makes the next
/// character literal and goes (`\$HOME` is `$HOME`, `\\` is one backslash).
pub(crate) fn expand_raw(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut it = text.chars().peekable();
    Expander {
        escape: '\\',
        lookup,
        raw: true,
    }
    .run(&mut it, None)
}

struct Expander<'a> {
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Quotes are plain text (heredoc content).
    raw: bool,
}

impl Expander<'_> {
    /// Expands until `stop` (unescaped, outside quotes) or the end.
    fn run(&self, it: &mut Peekable<Chars>, stop: Option<char>) -> Result<String, ExpandError> {
        let mut out = String::new();
        while let Some(c) = it.next() {
            if Some(c) == stop {
                return Ok(out);
            }
            match c {
                '\'' | '"' if self.raw => out.push(c),
                '\'' => loop {
                    match it.next() {
                        Some('\'') => break,
                        Some(c) => out.push(c),
                        None => return Err(ExpandError::SingleQuote),
                    }
                },
                '"' => self.double(it, &mut out)?,
                '$' => out.push_str(&self.var(it)?),
                c if c == self.escape => out.extend(it.next()),
                c => out.push(c),
            }
        }
        match stop {
            Some(_) => Err(ExpandError::UnclosedWord),
            None => Ok(out),
        }
    }

    fn double(&self, it: &mut Peekable<Chars>, out: &mut String) -> Result<(), ExpandError> {
        loop {
            match it.next() {
                Some('"') => return Ok(()),
                Some('$') => out.push_str(&self.var(it)?),
                Some(c) if c == self.escape => match it.peek() {
                    Some(&n) if n == '"' || n == '$' || n == self.escape => {
                        out.push(n);
                        it.next();
                    }
                    _ => out.push(c),
                },
                Some(c) => out.push(c),
                None => return Err(ExpandError::DoubleQuote),
            }
        }
    }

    /// After a `$`: a name, a `${...}` form, or a literal `$`.
    fn var(&self, it: &mut Peekable<Chars>) -> Result<String, ExpandError> {
        if it.peek() == Some(&'{') {
            it.next();
            return self.braced(it);
        }
        let name = name(it);
        if name.is_empty() {
            return Ok("$".into());
        }
        Ok((self.lookup)(&name).unwrap_or_default())
    }

    fn braced(&self, it: &mut Peekable<Chars>) -> Result<String, ExpandError> {
        let name = name(it);
        if name.is_empty() {
            return Err(ExpandError::NoName);
        }
        let value = (self.lookup)(&name);
        let colon = it.peek() == Some(&':');
        if colon {
            it.next();
        }
        let op = it.next();
        if op == Some('}') && !colon {
            return Ok(value.unwrap_or_default());
        }
        let word = match op {
            Some('-' | '+' | '?') => self.run(it, Some('}'))?,
            None => return Err(ExpandError::UnclosedName { name }),
            Some(op) => return Err(ExpandError::Unsupported { name, colon, op }),
        };
        // With the colon, an empty value counts as unset.
        let set = value.as_ref().filter(|v| !colon || !v.is_empty());
        Ok(match (op, set) {
            (Some('-'), Some(v)) => v.clone(),
            (Some('-'), None) => word,
            (Some('+'), Some(_)) => word,
            (Some('+'), None) => String::new(),
            (_, Some(v)) => v.clone(),
            (_, None) => {
                return Err(ExpandError::Required {
                    name,
                    message: word,
                });
            }
        })
    }
}

fn name(it: &mut Peekable<Chars>) -> String {
    let mut name = String::new();
    while let Some(&c) = it.peek() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (!name.is_empty() && c.is_ascii_digit());
        if !ok {
            break;
        }
        name.push(c);
        it.next();
    }
    name
}
