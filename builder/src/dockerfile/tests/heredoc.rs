//! Heredocs in RUN, COPY and ADD (BuildKit's syntax and meaning).

use super::{fail, graph};
use crate::dockerfile::{
    Heredoc, InlineFile, InstructionKind as K, ShellOrExec, StepKind, parse, parse_onbuild_triggers,
};

fn run_text(src: &str, n: usize) -> String {
    match &parse(src).unwrap().instructions[n].kind {
        K::Run {
            command: ShellOrExec::Shell(s),
            ..
        } => s.clone(),
        other => panic!("not a shell RUN: {other:?}"),
    }
}

#[test]
fn dockerfile_heredoc_bodies_belong_to_the_instruction() {
    let src = "FROM a\nRUN <<EOF\n# not a comment\n\necho a \\\n  FROM x\nEOF\nRUN true\n";
    let df = parse(src).unwrap();
    let lines: Vec<usize> = df.instructions.iter().map(|i| i.line).collect();
    assert_eq!(lines, vec![1, 2, 8]);
    // A lone heredoc without #! is run by the shell as the command.
    assert_eq!(run_text(src, 1), "# not a comment\n\necho a \\\n  FROM x\n");
    // The text keeps the body and delimiter, for the history.
    assert_eq!(
        df.instructions[1].text,
        "RUN <<EOF\n# not a comment\n\necho a \\\n  FROM x\nEOF"
    );
    // A continuation before the heredoc word; the body follows the last line.
    assert_eq!(
        run_text(
            "FROM a\nRUN --mount=type=tmpfs,target=/t \\\n <<EOF\nls\nEOF",
            1
        ),
        "ls\n"
    );
}

#[test]
fn dockerfile_heredoc_delimiters() {
    // <<- strips leading tabs, from the body and the delimiter line.
    assert_eq!(
        run_text(
            "FROM a\nRUN <<-EOF\n\techo a\n\t\t\techo b\n\t  c\n\tEOF\n",
            1
        ),
        "echo a\necho b\n  c\n"
    );
    // Without -, a tabbed delimiter is a body line.
    assert_eq!(run_text("FROM a\nRUN <<EOF\n\tEOF\nEOF\n", 1), "\tEOF\n");
    // Quoted delimiters; a RUN body is left to the shell either way.
    assert_eq!(
        run_text("FROM a\nRUN <<\"EOF\"\necho $HOME\nEOF", 1),
        "echo $HOME\n"
    );
    assert_eq!(run_text("FROM a\nRUN <<'E O'\nx\nE O", 1), "x\n");
    assert_eq!(run_text("FROM a\nRUN 3<<EOF\nx\nEOF", 1), "x\n");
    // Not heredocs: quoted, <<<, after other text, JSON form.
    assert_eq!(run_text("FROM a\nRUN echo \"<<EOF\"", 1), "echo \"<<EOF\"");
    assert_eq!(run_text("FROM a\nRUN cat <<<word", 1), "cat <<<word");
    assert_eq!(run_text("FROM a\nRUN echo a<<EOF", 1), "echo a<<EOF");
    let df = parse("FROM a\nRUN [\"cat\", \"<<EOF\"]\nRUN x").unwrap();
    assert_eq!(df.instructions.len(), 3);
    // Heredocs are for RUN, COPY and ADD only: elsewhere the next line is
    // an instruction.
    assert_eq!(fail("FROM a\nENV <<EOF\nx\nEOF").0, Some(2),);
}

#[test]
fn dockerfile_heredoc_run_forms() {
    // The command uses the heredoc: the shell reads it as written.
    assert_eq!(
        run_text("FROM a\nRUN python3 <<EOF\nprint(\"hi\")\nEOF\n", 1),
        "python3 <<EOF\nprint(\"hi\")\nEOF"
    );
    assert_eq!(
        run_text("FROM a\nRUN <<EOF bash -e\nset -o pipefail\nEOF", 1),
        "<<EOF bash -e\nset -o pipefail\nEOF"
    );
    // Several on one line: bodies in the order of their words.
    assert_eq!(
        run_text(
            "FROM a\nRUN <<A cat > /a && <<-\"B\" cat > /b\none\nA\n\ttwo\n\tB\nRUN next",
            1
        ),
        "<<A cat > /a && <<-\"B\" cat > /b\none\nA\n\ttwo\nB"
    );
    // A lone heredoc with #! is a script for the interpreter it names.
    assert_eq!(
        run_text(
            "FROM a\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF",
            1
        ),
        "/usr/bin/env python3 /dev/fd/3 3<<'EOF'\n#!/usr/bin/env python3\nprint(1)\nEOF"
    );
    assert_eq!(
        run_text(
            "FROM a\nRUN <<-'it'\\''s'\n\t#!/bin/sh -eu\n\techo $1\n\tit's\n",
            1
        ),
        "#!/bin/sh -eu\necho $1\n",
        "a tab before #! means no script, as in BuildKit"
    );
    assert_eq!(
        run_text("FROM a\nRUN <<\"S\"\n#! /bin/bash  -e \nread x\nS", 1),
        "/bin/bash -e /dev/fd/3 3<<'S'\n#! /bin/bash  -e \nread x\nS"
    );
    // The body is in the step's resolved text, so it keys the cache.
    let g = graph("FROM a\nRUN <<EOF\necho one\nEOF", &[], None).unwrap();
    assert_eq!(g.stages[0].steps[0].resolved, "RUN echo one\n");
}

#[test]
fn dockerfile_heredoc_copy_files() {
    let src = "FROM a\nARG NAME=kiln\nENV HOME=/root\nCOPY <<EOF /etc/motd\nhi \"$NAME\" '${HOME}' \\$NAME a\\\\b\nEOF\nCOPY --chmod=600 a <<-'RAW' <<two /dir/\n\t$NAME\n\tRAW\n${NAME:-x}\ntwo\nADD <<EOF /x.tar\nnot extracted\nEOF\n";
    let df = parse(src).unwrap();
    let K::Copy(c) = &df.instructions[3].kind else {
        panic!()
    };
    assert_eq!(
        c.inline,
        vec![Heredoc {
            name: "EOF".into(),
            content: "hi \"$NAME\" '${HOME}' \\$NAME a\\\\b\n".into(),
            chomp: false,
            expand: true,
        }]
    );
    assert!(c.sources.is_empty());
    let g = graph(src, &[], None).unwrap();
    let st = &g.stages[0].steps;
    let StepKind::Copy { inline, dest, .. } = &st[1].kind else {
        panic!()
    };
    // Substituted, quotes kept, a backslash makes the next character literal.
    assert_eq!(
        (inline.as_slice(), dest.as_str()),
        (
            &[InlineFile {
                name: "EOF".into(),
                content: "hi \"kiln\" '/root' $NAME a\\b\n".into()
            }][..],
            "/etc/motd"
        )
    );
    let StepKind::Copy {
        sources,
        inline,
        chmod,
        ..
    } = &st[2].kind
    else {
        panic!()
    };
    assert_eq!(sources, &vec!["a".to_string()]);
    assert_eq!(*chmod, Some(0o600));
    assert_eq!(
        inline,
        &vec![
            InlineFile {
                name: "RAW".into(),
                content: "$NAME\n".into()
            },
            InlineFile {
                name: "two".into(),
                content: "kiln\n".into()
            },
        ]
    );
    assert_eq!(
        st[2].resolved,
        "COPY --chmod=600 a <<RAW:\"$NAME\\n\" <<two:\"kiln\\n\" /dir/"
    );
    let StepKind::Copy { inline, add, .. } = &st[3].kind else {
        panic!()
    };
    assert!(*add);
    assert_eq!(inline[0].content, "not extracted\n");
    // The content keys the cache: another value, another resolved text.
    let other = graph(src, &[("NAME", "other")], None).unwrap();
    assert_ne!(other.stages[0].steps[1].resolved, st[1].resolved);
    // In JSON form, <<EOF is a file name.
    let g = graph("FROM a\nCOPY [\"<<EOF\", \"/x\"]", &[], None).unwrap();
    assert!(
        matches!(&g.stages[0].steps[0].kind, StepKind::Copy { sources, inline, .. } if sources[0] == "<<EOF" && inline.is_empty())
    );
}

#[test]
fn dockerfile_heredoc_errors() {
    assert_eq!(
        fail("FROM a\nRUN true\nRUN <<EOF\necho\nEO F\n"),
        (
            Some(3),
            "unterminated heredoc <<EOF: no line \"EOF\" after it".into()
        )
    );
    assert_eq!(
        fail("FROM a\nCOPY a <<EOF\nx\nEOF"),
        (
            Some(2),
            "COPY cannot take a heredoc as its destination".into()
        )
    );
    assert_eq!(
        fail("FROM a\nCOPY <<EOF /x\n${A:?is needed}\nEOF"),
        (
            Some(2),
            "substitution failed in heredoc <<EOF: A: is needed".into()
        )
    );
}

#[test]
fn dockerfile_heredoc_in_onbuild() {
    let src = "FROM a\nONBUILD RUN <<EOF\necho built on\nEOF\nRUN mine";
    let df = parse(src).unwrap();
    let K::OnBuild {
        trigger,
        instruction,
    } = &df.instructions[1].kind
    else {
        panic!()
    };
    // Stored with its body, as BuildKit stores it.
    assert_eq!(trigger, "RUN <<EOF\necho built on\nEOF");
    assert!(
        matches!(&instruction.kind, K::Run { command: ShellOrExec::Shell(s), .. } if s == "echo built on\n")
    );
    assert_eq!(df.instructions[2].line, 5);
    // And read back from a base image's config.
    let t = parse_onbuild_triggers(std::slice::from_ref(trigger), '\\', 7).unwrap();
    assert_eq!(t[0].kind, instruction.kind);
    let e = parse_onbuild_triggers(&["COPY <<A /a\nx\nA\nextra".to_string()], '\\', 7).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:7: base image ONBUILD: ONBUILD trigger has a line after its heredocs: \"extra\""
    );
    // A stage built on it runs the trigger.
    let g = graph(
        "FROM a AS lib\nONBUILD COPY <<EOF /f\nv\nEOF\nFROM lib",
        &[],
        None,
    )
    .unwrap();
    assert!(
        matches!(&g.stages[1].steps[0].kind, StepKind::Copy { inline, .. } if inline[0].content == "v\n")
    );
}
