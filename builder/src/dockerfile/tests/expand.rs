use crate::dockerfile::expand;

fn x(word: &str) -> Result<String, String> {
    expand(word, '\\', &|n| match n {
        "A" => Some("a".into()),
        "EMPTY" => Some(String::new()),
        "SP" => Some("x y".into()),
        _ => None,
    })
    .map_err(|e| e.to_string())
}

#[test]
fn dockerfile_expand_plain_and_braced() {
    assert_eq!(x("$A/${A}/b").unwrap(), "a/a/b");
    assert_eq!(x("pre${A}post$A.txt").unwrap(), "preaposta.txt");
    assert_eq!(x("$UNSET-x").unwrap(), "-x");
    assert_eq!(x("${SP}").unwrap(), "x y");
    assert_eq!(x("cost: 5$").unwrap(), "cost: 5$");
}

#[test]
fn dockerfile_expand_default_and_alternative() {
    assert_eq!(x("${UNSET:-def}").unwrap(), "def");
    assert_eq!(x("${EMPTY:-def}").unwrap(), "def");
    assert_eq!(x("${EMPTY-def}").unwrap(), "");
    assert_eq!(x("${A:-def}").unwrap(), "a");
    assert_eq!(x("${A:+alt}").unwrap(), "alt");
    assert_eq!(x("${EMPTY:+alt}").unwrap(), "");
    assert_eq!(x("${EMPTY+alt}").unwrap(), "alt");
    assert_eq!(x("${UNSET:+alt}").unwrap(), "");
    assert_eq!(x("${UNSET:-${A}-nested}").unwrap(), "a-nested");
    assert_eq!(
        x("${UNSET:?must be set}").unwrap_err(),
        "UNSET: must be set"
    );
}

#[test]
fn dockerfile_expand_quotes_and_escapes() {
    assert_eq!(x(r#""$A b""#).unwrap(), "a b");
    assert_eq!(x("'$A b'").unwrap(), "$A b");
    assert_eq!(x(r"\$A").unwrap(), "$A");
    assert_eq!(x(r"\${A}").unwrap(), "${A}");
    assert_eq!(x(r#""say \"hi\"""#).unwrap(), r#"say "hi""#);
    assert_eq!(x(r"a\ b").unwrap(), "a b");
    let tick = expand("`$A$A", '`', &|_| Some("v".into())).unwrap();
    assert_eq!(tick, "$Av");
}

#[test]
fn dockerfile_expand_errors() {
    assert!(x("${A").unwrap_err().contains("missing '}'"));
    assert!(x("${}").unwrap_err().contains("bad substitution"));
    assert!(
        x("${A%%x}")
            .unwrap_err()
            .contains("unsupported substitution")
    );
    assert!(
        x("'open")
            .unwrap_err()
            .contains("unterminated single quote")
    );
    assert!(
        x("\"open")
            .unwrap_err()
            .contains("unterminated double quote")
    );
}

#[test]
fn dockerfile_expand_raw_for_heredoc_content() {
    let raw = |t: &str| {
        crate::dockerfile::expand::expand_raw(t, &|n| (n == "A").then(|| "a".to_string()))
    };
    assert_eq!(raw("'$A' \"$A\" ${A:-x} $B.").unwrap(), "'a' \"a\" a .");
    assert_eq!(raw("\\$A \\\\ \\n end\\").unwrap(), "$A \\ n end");
    assert!(raw("${A").is_err());
}
