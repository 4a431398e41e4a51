//! `.dockerignore` with Docker's semantics (moby/patternmatcher and its
//! `ignorefile` reader), not gitignore's:
//!
//! - patterns are matched against the whole path relative to the context
//!   root: `foo` and `*.pyc` match only at the root; `**/*.pyc` at any depth;
//! - `*` and `?` never cross `/`; `**` matches any number of directories,
//!   including none; `[...]` classes and `\` escapes as in Go's
//!   `filepath.Match`;
//! - a pattern that matches a directory matches everything below it;
//! - the last matching pattern wins, and `!` re-includes;
//! - lines starting with `#` are comments, surrounding whitespace is trimmed,
//!   each pattern is `filepath.Clean`ed and a leading `/` dropped;
//! - a syntactically bad pattern (unclosed `[`, lone `!`) is an error, as in
//!   `docker build`.

use regex::Regex;

/// A parsed `.dockerignore`: an ordered list of patterns.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// A pattern Docker would reject, with its 1-based line in the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: bad pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// 1-based line number (0 when the pattern did not come from a file).
    pub line: usize,
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: PatternSyntaxError,
}

/// What is wrong with one pattern, as moby's `New` and Go's
/// `filepath.Match` would say.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatternSyntaxError {
    /// The pattern is `!` alone.
    #[error("a lone \"!\" excludes nothing")]
    LoneBang,
    /// The pattern ends in a `\` with nothing after it.
    #[error("trailing backslash escapes nothing")]
    TrailingBackslash,
    /// A `[` class has no closing `]`.
    #[error("unclosed character class")]
    UnclosedClass,
    /// A `-` or `]` where a class character should be.
    #[error("{found:?} out of place in a character class")]
    OutOfPlace {
        /// The character.
        found: char,
    },
    /// The translated regex does not compile.
    #[error("{0}")]
    Regex(regex::Error),
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern without its `!`.
    text: String,
    exclusion: bool,
    kind: Kind,
}

/// moby's four match strategies; which one a pattern gets decides its
/// meaning in corner cases (`**foo` is a plain suffix test), so they are
/// kept as they are rather than all turned into regexes.
#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `text` without its trailing `**`.
    Prefix(String),
    /// `text` without its leading `**`.
    Suffix(String),
    Regex(Regex),
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if let Some(pattern) = read_line(line) {
                patterns.push(Pattern::new(&pattern).map_err(|reason| PatternError {
                    line: index + 1,
                    pattern: line.to_owned(),
                    reason,
                })?);
            }
        }
        Ok(Self { patterns })
    }

    /// Builds a matcher from patterns given one by one (e.g. from
    /// `kiln.yaml`), read as if they were lines of a `.dockerignore`.
    pub fn from_patterns<S: AsRef<str>>(
        patterns: impl IntoIterator<Item = S>,
    ) -> Result<Self, PatternError> {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref();
            if let Some(pattern) = read_line(p) {
                out.push(Pattern::new(&pattern).map_err(|reason| PatternError {
                    line: 0,
                    pattern: p.to_owned(),
                    reason,
                })?);
            }
        }
        Ok(Self { patterns: out })
    }

    /// Whether there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative to the context root, `/`-separated, no
    /// leading `./`) is left out of the context: Docker's
    /// `MatchesOrParentMatches`.
    pub fn is_excluded(&self, path: &str) -> bool {
        let parents: Vec<&str> = path
            .match_indices('/')
            .filter_map(|(i, _)| path.get(..i))
            .collect();
        let mut matched = false;
        for pattern in &self.patterns {
            // An include that already holds, or an exclusion with nothing to
            // undo, cannot change the outcome.
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(path) || parents.iter().any(|p| pattern.matches(p)) {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// Whether some `!` pattern could re-include a path below the excluded
    /// directory `dir`, so that the walk must still enter it. Conservative:
    /// it compares `dir/` with each exclusion's literal prefix (the text
    /// before its first wildcard).
    pub fn may_include_under(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            match p.text.find(['*', '?', '[', '\\']) {
                // Something below `dir`, or `dir` or one of its parents
                // (which re-includes everything below).
                None => {
                    p.text.starts_with(&dir_slash) || dir_slash.starts_with(&format!("{}/", p.text))
                }
                Some(i) => {
                    let literal = p.text.get(..i).unwrap_or_default();
                    literal.starts_with(&dir_slash) || dir_slash.starts_with(literal)
                }
            }
        })
    }
}

/// One line as moby's `ignorefile.ReadAll` reads it: `None` for comments
/// and blank lines, else the pattern cleaned, with a leading `/` dropped and
/// any `!` kept in front.
fn read_line(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (invert, rest) = match line.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, line),
    };
    let mut pattern = String::new();
    if !rest.is_empty() {
        pattern = clean(rest);
        if pattern.len() > 1
            && let Some(stripped) = pattern.strip_prefix('/')
        {
            pattern = stripped.to_owned();
        }
    }
    Some(if invert {
        format!("!{pattern}")
    } else {
        pattern
    })
}

/// Go's `filepath.Clean` for `/`-separated paths: collapses `//`, drops `.`
/// elements, resolves `..` lexically, drops a trailing `/`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

impl Pattern {
    /// moby's `New` then `compile` for one (already read) pattern.
    fn new(raw: &str) -> Result<Self, PatternSyntaxError> {
        let cleaned = clean(raw.trim());
        let (exclusion, text) = match cleaned.strip_prefix('!') {
            Some("") => return Err(PatternSyntaxError::LoneBang),
            Some(rest) => (true, rest.to_owned()),
            None => (false, cleaned),
        };
        check_syntax(&text)?;
        let kind = compile(&text)?;
        Ok(Self {
            text,
            exclusion,
            kind,
        })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

/// Translates a pattern the way moby's `Pattern.compile` does: `*` ->
/// `[^/]*`, `?` -> `[^/]`, `**/` or inner `**` -> `(.*/)?`, trailing `**` ->
/// `.*` (or a prefix test), leading `**` -> a suffix test when the rest is
/// literal.
fn compile(text: &str) -> Result<Kind, PatternSyntaxError> {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut detected = Detected::Exact;
    let mut re = String::from("^");
    let mut chars = text.chars().peekable();
    let mut first = true;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        re.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if first {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                detected = Detected::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                detected = Detected::Regex;
            }
            '\\' => match chars.next() {
                Some(escaped) => {
                    re.push_str(&regex::escape(escaped.encode_utf8(&mut [0; 4])));
                    detected = Detected::Regex;
                }
                None => re.push_str(r"\\"),
            },
            '[' => {
                re.push_str(&class(&mut chars)?);
                detected = Detected::Regex;
            }
            other => re.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
        }
        first = false;
    }
    Ok(match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(text.get(..text.len() - 2).unwrap_or("").to_owned()),
        Detected::Suffix => Kind::Suffix(text.get(2..).unwrap_or("").to_owned()),
        Detected::Regex => {
            re.push('$');
            Kind::Regex(Regex::new(&re).map_err(PatternSyntaxError::Regex)?)
        }
    })
}

/// A `filepath.Match` character class (after its `[`) as a regex class.
fn class(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<String, PatternSyntaxError> {
    let mut out = String::from("[");
    if chars.peek() == Some(&'^') {
        chars.next();
        out.push('^');
    }
    let mut ranges = 0;
    loop {
        if chars.peek() == Some(&']') && ranges > 0 {
            chars.next();
            out.push(']');
            return Ok(out);
        }
        let lo = class_char(chars)?;
        out.push_str(&regex::escape(lo.encode_utf8(&mut [0; 4])));
        if chars.peek() == Some(&'-') {
            chars.next();
            let hi = class_char(chars)?;
            out.push('-');
            out.push_str(&regex::escape(hi.encode_utf8(&mut [0; 4])));
        }
        ranges += 1;
    }
}

/// One (possibly escaped) character of a class; Go's `getEsc`.
fn class_char(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<char, PatternSyntaxError> {
    match chars.next() {
        None => Err(PatternSyntaxError::UnclosedClass),
        Some(c @ ('-' | ']')) => Err(PatternSyntaxError::OutOfPlace { found: c }),
        Some('\\') => chars.next().ok_or(PatternSyntaxError::UnclosedClass),
        Some(c) => Ok(c),
    }
}

/// Rejects what Go's `filepath.Match` rejects (moby calls it for exactly
/// this): bad classes and a trailing `\`.
fn check_syntax(text: &str) -> Result<(), PatternSyntaxError> {
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.next().is_none() => {
                return Err(PatternSyntaxError::TrailingBackslash);
            }
            '[' => {
                class(&mut chars)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn excluded(patterns: &[&str], path: &str) -> bool {
        DockerIgnore::from_patterns(patterns)
            .unwrap()
            .is_excluded(path)
    }

    /// moby/patternmatcher's `TestMatches` table: pattern, path, whether
    /// the path (or a parent) matches.
    #[rstest]
    #[case("**", "file", true)]
    #[case("**/", "file", true)]
    #[case("**", "dir/file", true)]
    #[case("**/", "dir/file", true)]
    #[case("**/**", "dir/file", true)]
    #[case("dir/**", "dir/file", true)]
    #[case("dir/**", "dir/dir2/file", true)]
    #[case("**/dir", "dir", true)]
    #[case("**/dir", "dir/file", true)]
    #[case("**/dir2/*", "dir/dir2/file", true)]
    #[case("**/dir2/**", "dir/dir2/dir3/file", true)]
    #[case("**file", "file", true)]
    #[case("**file", "dir/file", true)]
    #[case("**/file", "dir/file", true)]
    #[case("**file", "dir/dir/file", true)]
    #[case("**/file", "dir/dir/file", true)]
    #[case("**/file*", "dir/dir/file", true)]
    #[case("**/file*", "dir/dir/file.txt", true)]
    #[case("**/file*txt", "dir/dir/file.txt", true)]
    #[case("**/file*.txt", "dir/dir/file.txt", true)]
    #[case("**/file*.txt*", "dir/dir/file.txt", true)]
    #[case("**/**/*.txt", "dir/dir/file.txt", true)]
    #[case("**/**/*.txt2", "dir/dir/file.txt", false)]
    #[case("**/*.txt", "file.txt", true)]
    #[case("**/**/*.txt", "file.txt", true)]
    #[case("a**/*.txt", "a/file.txt", true)]
    #[case("a**/*.txt", "a/dir/file.txt", true)]
    #[case("a**/*.txt", "a/dir/dir/file.txt", true)]
    #[case("a/*.txt", "a/dir/file.txt", false)]
    #[case("a/*.txt", "a/file.txt", true)]
    #[case("a/*.txt**", "a/file.txt", true)]
    #[case("a[b-d]e", "ae", false)]
    #[case("a[b-d]e", "ace", true)]
    #[case("a[b-d]e", "aae", false)]
    #[case("a[^b-d]e", "aze", true)]
    #[case(".*", ".foo", true)]
    #[case(".*", "foo", false)]
    #[case("abc.def", "abcdef", false)]
    #[case("abc.def", "abc.def", true)]
    #[case("abc.def", "abcZdef", false)]
    #[case("abc?def", "abcZdef", true)]
    #[case("abc?def", "abcdef", false)]
    #[case("**/foo/bar", "foo/bar", true)]
    #[case("**/foo/bar", "dir/foo/bar", true)]
    #[case("**/foo/bar", "dir/dir2/foo/bar", true)]
    #[case("abc/**", "abc", false)]
    #[case("abc/**", "abc/def", true)]
    #[case("abc/**", "abc/def/ghi", true)]
    #[case("**/.foo", ".foo", true)]
    #[case("**/.foo", "bar.foo", false)]
    #[case("a(b)c/def", "a(b)c/def", true)]
    #[case("a(b)c/def", "a(b)c/xyz", false)]
    #[case("a.|)$(}+{bc", "a.|)$(}+{bc", true)]
    #[case(
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        true
    )]
    #[case(r"a\\", r"a\", true)]
    #[case(r"a\*b", "a*b", true)]
    #[case(r"a\*b", "axb", false)]
    // Go's filepath.Match table, via moby's tests.
    #[case("*c", "abc", true)]
    #[case("a*", "ab/c", true)]
    #[case("a*/b", "abc/b", true)]
    #[case("a*/b", "a/c/b", false)]
    #[case("a*b*c*d*e*/f", "axbxcxdxe/f", true)]
    #[case("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false)]
    #[case("a*b?c*x", "abxbbxdbxebxczzx", true)]
    #[case("a*b?c*x", "abxbbxdbxebxczzy", false)]
    #[case("ab[^c]", "abc", false)]
    #[case("ab[^e-g]", "abc", true)]
    #[case("a?b", "a☺b", true)]
    #[case("a???b", "a☺b", false)]
    #[case("[a-ζ]*", "α", true)]
    #[case("a?b", "a/b", false)]
    #[case("a*b", "a/b", false)]
    #[case(r"[\]a]", "]", true)]
    #[case(r"[x\-]", "-", true)]
    #[case(r"[x\-]", "z", false)]
    #[case("*x", "xxx", true)]
    fn moby_match_table(#[case] pattern: &str, #[case] path: &str, #[case] expected: bool) {
        assert_eq!(
            excluded(&[pattern], path),
            expected,
            "{pattern:?} vs {path:?}"
        );
    }

    #[rstest]
    #[case(&["**", "!util/docker/web"], "util/docker/web/foo", false)]
    #[case(&["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", true)]
    #[case(&["**", "!dist/*.whl"], "dist/proxy.py-2.4.0-py3-none-any.whl", false)]
    #[case(&["docs", "!docs/README.md"], "docs/README.md", false)]
    #[case(&["docs/", "!docs/README.md"], "docs/README.md", false)]
    #[case(&["docs/*", "!docs/README.md"], "docs/README.md", false)]
    #[case(&["*.go", "!fileutils.go"], "fileutils.go", false)]
    #[case(&["!fileutils.go", "*.go"], "fileutils.go", true)]
    fn moby_multi_pattern_table(
        #[case] patterns: &[&str],
        #[case] path: &str,
        #[case] expected: bool,
    ) {
        assert_eq!(
            excluded(patterns, path),
            expected,
            "{patterns:?} vs {path:?}"
        );
    }

    #[rstest]
    #[case("[")]
    #[case("[^")]
    #[case("[^bc")]
    #[case("a[")]
    #[case("[]a]")]
    #[case("[-]")]
    #[case("[x-]")]
    #[case("[-x]")]
    #[case("\\")]
    #[case("[a-b-c]")]
    #[case("!")]
    #[case("! ")]
    fn bad_patterns_are_errors(#[case] pattern: &str) {
        assert!(
            DockerIgnore::from_patterns([pattern]).is_err(),
            "{pattern:?}"
        );
    }

    /// The example file from Docker's `.dockerignore` documentation.
    const DOCS_EXAMPLE: &str = "# comment\n*/temp*\n*/*/temp*\ntemp?\n";

    #[rstest]
    #[case("somedir/temporary.txt", true)]
    #[case("somedir/temp", true)]
    #[case("somedir/subdir/temporary.txt", true)]
    #[case("tempa", true)]
    #[case("tempb", true)]
    #[case("temporary.txt", false)]
    #[case("a/b/c/temp.txt", false)]
    #[case("temp", false)]
    #[case("# comment", false)]
    fn docker_docs_example(#[case] path: &str, #[case] expected: bool) {
        let ignore = DockerIgnore::parse(DOCS_EXAMPLE).unwrap();
        assert_eq!(ignore.is_excluded(path), expected, "{path}");
    }

    /// Docker docs: "exceptions" and the order they are applied in.
    #[rstest]
    #[case("*.md\n!README.md", "README.md", false)]
    #[case("*.md\n!README.md", "CHANGES.md", true)]
    #[case("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", true)]
    #[case("*.md\n!README*.md\nREADME-secret.md", "README-public.md", false)]
    #[case("*.md\nREADME-secret.md\n!README*.md", "README-secret.md", false)]
    #[case("**/*.go", "a/b/c.go", true)]
    #[case("**/*.go", "c.go", true)]
    fn docker_docs_exceptions(#[case] file: &str, #[case] path: &str, #[case] expected: bool) {
        let ignore = DockerIgnore::parse(file).unwrap();
        assert_eq!(ignore.is_excluded(path), expected, "{file:?} vs {path}");
    }

    /// Where Docker and gitignore disagree, Docker wins.
    #[rstest]
    #[case("foo", "foo", true)]
    #[case("foo", "sub/foo", false)]
    #[case("*.pyc", "x.pyc", true)]
    #[case("*.pyc", "pkg/x.pyc", false)]
    #[case("**/*.pyc", "pkg/x.pyc", true)]
    #[case("/data", "data/raw.csv", true)]
    #[case("data/", "data/raw.csv", true)]
    #[case("data/", "sub/data/raw.csv", false)]
    #[case("./build/../dist", "dist/x", true)]
    #[case("  build  ", "build", true)]
    #[case("  # not a comment", "# not a comment", true)]
    #[case("\u{feff}bom", "bom", true)]
    fn dockerignore_is_not_gitignore(
        #[case] file: &str,
        #[case] path: &str,
        #[case] expected: bool,
    ) {
        let ignore = DockerIgnore::parse(file).unwrap();
        assert_eq!(ignore.is_excluded(path), expected, "{file:?} vs {path}");
    }

    #[test]
    fn parse_reports_the_line_of_a_bad_pattern() {
        let err = DockerIgnore::parse("ok\n# fine\nbad[\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.pattern, "bad[");
    }

    #[rstest]
    #[case(&["data", "!data/keep.txt"], "data", true)]
    #[case(&["data", "!data/sub/keep.txt"], "data/sub", true)]
    #[case(&["data", "!data/sub/keep.txt"], "data/other", false)]
    #[case(&["data", "!**/keep.txt"], "data", true)]
    #[case(&["data", "!dat*/keep"], "data", true)]
    #[case(&["data", "!datafile"], "data", false)]
    #[case(&["data"], "data", false)]
    #[case(&["data", "!data"], "data/x", true)]
    fn walk_enters_excluded_dirs_only_when_needed(
        #[case] patterns: &[&str],
        #[case] dir: &str,
        #[case] expected: bool,
    ) {
        let ignore = DockerIgnore::from_patterns(patterns).unwrap();
        assert_eq!(
            ignore.may_include_under(dir),
            expected,
            "{patterns:?} vs {dir}"
        );
    }

    #[rstest]
    #[case("a//b/./c/", "a/b/c")]
    #[case("a/../../b", "../b")]
    #[case("/../a", "/a")]
    #[case("./", ".")]
    #[case("/", "/")]
    fn clean_is_go_filepath_clean(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(clean(input), expected);
    }
}
