//! Physical lines to logical ones, as Docker reads them: parser directives
//! at the very top, comments and blank lines dropped, lines ending in the
//! escape character joined with the next (comment and blank lines inside a
//! continuation skipped). Also the word splitting the instructions share.

use super::DockerfileError;

/// One instruction's text, continuations joined.
pub(crate) struct Logical {
    /// 1-based line where it starts.
    pub line: usize,
    /// The joined text, leading whitespace trimmed.
    pub text: String,
    /// Whether it sat on one physical line (so columns are meaningful).
    pub single: bool,
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
    for (idx, raw) in phys.iter().enumerate().skip(first) {
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
                })
            }
            Some(c) => {
                c.text.push_str(body);
                c.single = false;
            }
        }
        if !continues && let Some(c) = cur.take() {
            items.push(c);
        }
    }
    items.extend(cur);
    for it in &mut items {
        it.text.truncate(it.text.trim_end().len());
    }
    Ok(Lines { escape, items })
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
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(t) else {
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
