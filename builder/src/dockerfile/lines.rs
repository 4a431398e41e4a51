//! Physical lines to logical ones, as Docker reads them: parser directives
//! at the very top, comments and blank lines dropped, lines ending in the
//! escape character joined with the next (comment and blank lines inside a
//! continuation skipped), and the bodies of heredocs (`RUN <<EOF`) taken
//! into the instruction that opens them, as they are.

use super::DockerfileError;
use super::heredoc::opener;
use super::syntax::Heredoc;
use super::words::{json_array, take_flags, words};

/// One instruction's text, continuations joined.
pub(crate) struct Logical {
    /// 1-based line where it starts.
    pub line: usize,
    /// The joined text, leading whitespace trimmed; heredoc bodies are not
    /// in it.
    pub text: String,
    /// Whether it sat on one physical line (so columns are meaningful).
    pub single: bool,
    /// The heredocs it opens, bodies read, in order.
    pub heredocs: Vec<Heredoc>,
}

/// The escape character and the logical lines of a file.
pub(crate) struct Lines {
    pub escape: char,
    pub items: Vec<Logical>,
}

/// Splits a Dockerfile into logical lines, reading the directives first.
pub(crate) fn split(src: &str) -> Result<Lines, DockerfileError> {
    let phys: Vec<&str> = src.lines().collect();
    let mut escape = '\\';
    let mut seen: Vec<String> = Vec::new();
    let mut first = 0;
    while let Some((key, value)) = phys.get(first).and_then(|l| directive(l)) {
        let line = first + 1;
        if seen.contains(&key) {
            return Err(DockerfileError::at(
                line,
                format!("the {key} parser directive is given twice"),
            ));
        }
        if key == "escape" {
            escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(DockerfileError::at(
                        line,
                        format!("the escape directive must be \\ or `, not {value:?}"),
                    ));
                }
            };
        }
        seen.push(key);
        first += 1;
    }
    let mut items = Vec::new();
    let mut cur: Option<Logical> = None;
    let mut next = first;
    while let Some(raw) = phys.get(next) {
        let idx = next;
        next += 1;
        let start = raw.trim_start();
        if start.is_empty() || start.starts_with('#') {
            continue;
        }
        let trimmed = raw.trim_end();
        let (body, continues) = match trimmed.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (*raw, false),
        };
        match cur.as_mut() {
            None => {
                cur = Some(Logical {
                    line: idx + 1,
                    text: body.trim_start().to_string(),
                    single: true,
                    heredocs: Vec::new(),
                })
            }
            Some(c) => {
                c.text.push_str(body);
                c.single = false;
            }
        }
        if !continues && let Some(mut c) = cur.take() {
            c.text.truncate(c.text.trim_end().len());
            c.heredocs = bodies(&c, escape, &phys, &mut next)?;
            items.push(c);
        }
    }
    if let Some(mut c) = cur {
        c.text.truncate(c.text.trim_end().len());
        c.heredocs = bodies(&c, escape, &phys, &mut next)?;
        items.push(c);
    }
    Ok(Lines { escape, items })
}

/// An ONBUILD trigger as stored in an image config: its first line is the
/// instruction, the lines after it the bodies of its heredocs (BuildKit
/// stores `RUN <<EOF` triggers so).
pub(crate) fn trigger(text: &str, escape: char, line: usize) -> Result<Logical, DockerfileError> {
    let phys: Vec<&str> = text.trim().lines().collect();
    let mut l = Logical {
        line,
        text: phys
            .first()
            .map(|f| f.trim().to_string())
            .unwrap_or_default(),
        single: false,
        heredocs: Vec::new(),
    };
    let mut next = 1;
    l.heredocs = bodies(&l, escape, &phys, &mut next)?;
    if l.heredocs.is_empty() {
        // No heredocs: the whole text is the instruction, line breaks and
        // all (as kiln always read triggers).
        l.text = text.trim().to_string();
    } else if let Some(extra) = phys.get(next) {
        return Err(DockerfileError::at(
            line,
            format!("ONBUILD trigger has a line after its heredocs: {extra:?}"),
        ));
    }
    Ok(l)
}

/// Reads the bodies of the heredocs `l` opens from `phys[*next..]`: each
/// runs to a line that is its delimiter (leading tabs aside with `<<-`).
/// Only RUN, COPY and ADD (also after ONBUILD) take heredocs, and not in
/// their JSON form, as in BuildKit.
fn bodies(
    l: &Logical,
    escape: char,
    phys: &[&str],
    next: &mut usize,
) -> Result<Vec<Heredoc>, DockerfileError> {
    if !l.text.contains("<<") || !takes_heredocs(&l.text, escape) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (_, w) in words(&l.text, escape) {
        let Some(o) = opener(&w) else { continue };
        let mut content = String::new();
        loop {
            let Some(line) = phys.get(*next) else {
                return Err(DockerfileError::at(
                    l.line,
                    format!("unterminated heredoc {w}: no line {:?} after it", o.name),
                ));
            };
            *next += 1;
            let end = if o.chomp {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if end == o.name {
                break;
            }
            content.push_str(line);
            content.push('\n');
        }
        out.push(Heredoc {
            name: o.name,
            content,
            chomp: o.chomp,
            expand: o.expand,
        });
    }
    Ok(out)
}

/// Whether an instruction's text may open heredocs: RUN, COPY or ADD (or
/// ONBUILD of one), not in JSON form.
fn takes_heredocs(text: &str, escape: char) -> bool {
    let mut rest = text;
    loop {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let name = rest[..end].to_ascii_uppercase();
        rest = rest[end..].trim_start();
        match name.as_str() {
            "ONBUILD" => continue,
            "RUN" | "COPY" | "ADD" => {
                let (_, args) = take_flags(rest, escape);
                return !matches!(json_array(args), Ok(Some(_)));
            }
            _ => return false,
        }
    }
}

/// A `# key=value` directive kiln knows (`escape`, `syntax`, `check`);
/// anything else ends the directive block, as in Docker.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?;
    let (key, value) = rest.split_once('=')?;
    let key = key.trim().to_ascii_lowercase();
    let value = value.trim();
    let known = matches!(key.as_str(), "escape" | "syntax" | "check");
    (known && !value.is_empty()).then(|| (key, value.to_string()))
}
