//! Heredocs, BuildKit's `<<EOF` in RUN, COPY and ADD: which words open one
//! ([`opener`]), and the shell text a RUN with heredocs becomes
//! ([`run_command`]), so the executor runs it like any shell-form command.
//!
//! BuildKit's rules, followed here: a word opens a heredoc when it is
//! `[digits]<<[-]WORD` with no `<` after the `<<` (so `<<<` is not one);
//! `<<-` strips leading tabs; quoting any part of WORD (`<<"EOF"`,
//! `<<'EOF'`) turns substitution off for COPY/ADD content; the bodies follow
//! the instruction's line in the order their openers appear. Kiln does not
//! take BuildKit 0.22's `<< EOF` (a space before the word), which would also
//! catch a shift such as `$((1 << 2))`.
//!
//! RUN, as BuildKit runs it:
//! - the command is just one heredoc and its body does not start with `#!`:
//!   the body is the shell command (`Shell(body)`);
//! - just one heredoc whose body starts with `#!`: a script to execute.
//!   BuildKit writes it to a file and runs that; kiln gives the shell the
//!   interpreter the `#!` line names, with the script on file descriptor 3
//!   as a heredoc (`/usr/bin/env python3 /dev/fd/3 3<<'EOF' ...`), so the
//!   executor needs nothing new, stdin stays free and no file is left in
//!   the layer. The shell must read POSIX heredocs (sh, bash, ash do);
//! - anything else (`python3 <<EOF`, `<<EOF bash`, several heredocs): the
//!   command line and the bodies as written, each followed by its delimiter,
//!   which `sh -c` reads as the heredocs they are.

use super::syntax::Heredoc;
use super::words::words;

/// What the word opening a heredoc says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opener {
    /// The delimiter, quotes removed.
    pub name: String,
    /// `<<-`.
    pub chomp: bool,
    /// No part of the delimiter was quoted.
    pub expand: bool,
}

/// The heredoc a word opens, if it opens one (BuildKit's
/// `^(\d*)<<(-?)([^<]*)$` on a word as written).
pub(crate) fn opener(word: &str) -> Option<Opener> {
    let rest = word
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let (name, quoted) = unquote(rest)?;
    (!name.is_empty()).then_some(Opener {
        name,
        chomp,
        expand: !quoted,
    })
}

/// A delimiter word with its quotes and escapes removed (`$` stays as
/// written), and whether it had quotes; `None` for an unclosed quote.
fn unquote(s: &str) -> Option<(String, bool)> {
    let mut out = String::new();
    let mut quoted = false;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            '\'' => {
                quoted = true;
                loop {
                    match it.next()? {
                        '\'' => break,
                        c => out.push(c),
                    }
                }
            }
            '"' => {
                quoted = true;
                loop {
                    match it.next()? {
                        '"' => break,
                        '\\' => {
                            let n = it.next()?;
                            if !matches!(n, '"' | '\\' | '$') {
                                out.push('\\');
                            }
                            out.push(n);
                        }
                        c => out.push(c),
                    }
                }
            }
            '\\' => out.extend(it.next()),
            c => out.push(c),
        }
    }
    Some((out, quoted))
}

/// The shell text of a RUN with heredocs (see the module doc); `rest` is
/// the command after the flags, `docs` the heredocs in order.
pub(crate) fn run_command(rest: &str, escape: char, docs: &[Heredoc]) -> String {
    let lone = matches!(words(rest, escape).as_slice(), [(_, w)] if opener(w).is_some());
    if let (true, Some(doc)) = (lone, docs.first()) {
        let body = doc.body();
        // BuildKit looks at the body as written (before `<<-` strips tabs).
        if doc.content.starts_with("#!")
            && let Some(s) = script(&body, &doc.name)
        {
            return s;
        }
        return body;
    }
    let mut full = rest.to_string();
    for d in docs {
        full.push('\n');
        full.push_str(&d.content);
        full.push_str(&d.name);
    }
    full
}

/// A `#!` script as a shell command: the interpreter and its one optional
/// argument (as the kernel splits the line), reading the script from fd 3.
fn script(body: &str, name: &str) -> Option<String> {
    let line = body.lines().next()?.strip_prefix("#!")?;
    let spec = line.trim_matches([' ', '\t']);
    let (interp, arg) = match spec.find([' ', '\t']) {
        Some(i) => (&spec[..i], spec[i..].trim_matches([' ', '\t'])),
        None => (spec, ""),
    };
    if interp.is_empty() {
        return None;
    }
    let mut s = sh_quote(interp);
    if !arg.is_empty() {
        s.push(' ');
        s.push_str(&sh_quote(arg));
    }
    // The delimiter cannot be a line of the body: that line would have
    // ended the heredoc in the Dockerfile. Quoted, so the shell leaves the
    // script as it is.
    s.push_str(" /dev/fd/3 3<<'");
    s.push_str(&name.replace('\'', r"'\''"));
    s.push_str("'\n");
    s.push_str(body);
    if !body.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(name);
    Some(s)
}

/// A word for sh: as is when it is plain, else in single quotes.
fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
