//! The word splitting every instruction shares: words on unquoted
//! whitespace, a JSON array (the exec form), leading `--flags`.

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
