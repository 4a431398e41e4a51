//! Physical lines to logical ones, as Docker reads them: parser directives
//! at the very top, comments and blank lines dropped, lines ending in the
//! escape character joined with the next (comment and blank lines inside a
//! continuation skipped), and the bodies of heredocs (`RUN <<EOF`) taken
//! into the instruction that opens them, as they are. Also the word
//! splitting the instructions share.

use super::DockerfileError;
use super::heredoc::opener;
use super::parse::Heredoc;

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

/// Splits text into words on unquoted whitespace, keeping quotes and escapes
/// in the words (substitution removes them later). Each word comes with its
/// byte offset, for columns.
pub(crate) fn words(s: &str, escape: char) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if quote.is_none() && c.is_whitespace() {
            if !word.is_empty() {
                out.push((start, std::mem::take(&mut word)));
            }
            continue;
        }
        if word.is_empty() {
            start = i;
        }
        word.push(c);
        if c == escape && quote != Some('\'') {
            if let Some((_, n)) = chars.next() {
                word.push(n);
            }
        } else if quote == Some(c) {
            quote = None;
        } else if quote.is_none() && (c == '"' || c == '\'') {
            quote = Some(c);
        }
    }
    if !word.is_empty() {
        out.push((start, word));
    }
    out
}

/// What Docker's `parseJSON` makes of an instruction's arguments: the exec
/// (JSON) form only when the whole text is a JSON array of strings. Anything
/// else that does not parse as a JSON array (`[ -f x ]`, `["a"] # note`) is
/// shell form, `Ok(None)`; a JSON array holding a non-string is an error in
/// Docker, here `Err(())` for the caller to word.
pub(crate) fn json_array(s: &str) -> Result<Option<Vec<String>>, ()> {
    let t = s.trim_start();
    if !t.starts_with('[') {
        return Ok(None);
    }
    // Docker's parser decodes the first JSON value and ignores what
    // follows it (`CMD ["a"] # note` is exec form), so this does too.
    let Some(Ok(values)) = serde_json::Deserializer::from_str(t)
        .into_iter::<Vec<serde_json::Value>>()
        .next()
    else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(()),
        })
        .collect::<Result<Vec<_>, ()>>()
        .map(Some)
}

/// Takes the leading `--flag[=value]` words off an instruction's arguments:
/// the flags with their offsets, and the rest of the text as written.
pub(crate) fn take_flags(s: &str, escape: char) -> (Vec<(usize, String)>, &str) {
    let mut flags = Vec::new();
    let mut rest = s;
    loop {
        let t = rest.trim_start();
        if !t.starts_with("--") {
            return (flags, t);
        }
        let offset = s.len() - t.len();
        let Some((_, w)) = words(t, escape).into_iter().next() else {
            return (flags, t);
        };
        // Words keep every character of the text, so the length is exact.
        let end = w.len();
        flags.push((offset, w));
        rest = &t[end..];
    }
}
