use super::fail;
use crate::dockerfile::{
    DockerfileError, InstructionKind as K, MountSpec, ShellOrExec, parse, parse_onbuild_triggers,
};

fn kinds(src: &str) -> Vec<K> {
    parse(src)
        .unwrap()
        .instructions
        .into_iter()
        .map(|i| i.kind)
        .collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn dockerfile_lines_comments_and_continuations() {
    let src = "# syntax=docker/dockerfile:1\n\n# a comment\nfrom busybox AS Base\nRUN echo a \\\n  # comment inside\n\n  && echo b\nrun true\n";
    let df = parse(src).unwrap();
    assert_eq!(df.escape, '\\');
    let lines: Vec<usize> = df.instructions.iter().map(|i| i.line).collect();
    assert_eq!(lines, vec![4, 5, 9]);
    assert_eq!(
        df.instructions[0].kind,
        K::From {
            image: "busybox".into(),
            name: Some("base".into()),
            platform: None
        }
    );
    assert_eq!(
        df.instructions[1].kind,
        K::Run {
            command: ShellOrExec::Shell("echo a   && echo b".into()),
            mounts: vec![]
        }
    );
}

#[test]
fn dockerfile_escape_directive_backtick() {
    let src = "# escape=`\nFROM busybox\nRUN echo a `\n  b\nCOPY a\\b c\\\n";
    let df = parse(src).unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(
        df.instructions[1].kind,
        K::Run {
            command: ShellOrExec::Shell("echo a   b".into()),
            mounts: vec![]
        }
    );
    let K::Copy(c) = &df.instructions[2].kind else {
        panic!()
    };
    assert_eq!((c.sources.clone(), c.dest.as_str()), (s(&["a\\b"]), "c\\"));
    // A directive after a comment is just a comment.
    let df = parse("# hello\n# escape=`\nFROM x\nRUN a \\\n b").unwrap();
    assert_eq!(df.escape, '\\');
    assert_eq!(
        fail("# escape=x\nFROM a"),
        (
            Some(1),
            "the escape directive must be \\ or `, not \"x\"".into()
        )
    );
}

#[test]
fn dockerfile_exec_and_shell_forms() {
    let k = kinds(
        "FROM a\nRUN [\"echo\", \"hi\"]\nCMD [bad json\nENTRYPOINT [\"/bin/app\"]\nSHELL [\"/bin/bash\", \"-c\"]\nCMD []",
    );
    assert_eq!(
        k[1],
        K::Run {
            command: ShellOrExec::Exec(s(&["echo", "hi"])),
            mounts: vec![]
        }
    );
    assert_eq!(k[2], K::Cmd(ShellOrExec::Shell("[bad json".into())));
    assert_eq!(k[3], K::Entrypoint(ShellOrExec::Exec(s(&["/bin/app"]))));
    assert_eq!(k[4], K::Shell(s(&["/bin/bash", "-c"])));
    assert_eq!(k[5], K::Cmd(ShellOrExec::Exec(vec![])));
}

#[test]
fn dockerfile_json_when_the_text_starts_with_a_string_array_as_dockers_parser_reads() {
    let k = kinds(
        "FROM a\nCMD [\"a\", \"b\"] # not a comment\nRUN [ -f x ] && echo y\nENTRYPOINT  [\"/app\"]  \nHEALTHCHECK CMD [\"true\"] x\nVOLUME [\"/a\", \"/b c\"]\nVOLUME [/d]\nCOPY [\"a\", \"b\"] /c/\nCOPY [\"x y\", \"/z/\"]",
    );
    // Docker decodes the first JSON value and ignores the rest of the line.
    assert_eq!(k[1], K::Cmd(ShellOrExec::Exec(s(&["a", "b"]))));
    assert!(
        matches!(&k[2], K::Run { command: ShellOrExec::Shell(c), .. } if c == "[ -f x ] && echo y")
    );
    assert_eq!(k[3], K::Entrypoint(ShellOrExec::Exec(s(&["/app"]))));
    let K::Healthcheck(h) = &k[4] else { panic!() };
    assert_eq!(h.test, s(&["CMD", "true"]));
    assert_eq!(k[5], K::Volume(s(&["/a", "/b c"])));
    assert_eq!(k[6], K::Volume(s(&["[/d]"])));
    let K::Copy(c) = &k[7] else { panic!() };
    assert_eq!((c.sources.clone(), c.dest.as_str()), (s(&["a"]), "b"));
    let K::Copy(c) = &k[8] else { panic!() };
    assert_eq!((c.sources.clone(), c.dest.as_str()), (s(&["x y"]), "/z/"));
    // A JSON array of something else than strings is an error, not shell form.
    for (src, name) in [
        ("FROM a\nCMD [1, 2]", "CMD"),
        ("FROM a\nRUN [\"a\", null]", "RUN"),
        ("FROM a\nENTRYPOINT [[\"x\"]]", "ENTRYPOINT"),
        ("FROM a\nSHELL [\"sh\", 1]", "SHELL"),
        ("FROM a\nHEALTHCHECK CMD [true]", "HEALTHCHECK"),
        ("FROM a\nVOLUME [1]", "VOLUME"),
        ("FROM a\nCOPY [\"a\", 2]", "COPY"),
    ] {
        assert_eq!(
            fail(src),
            (
                Some(2),
                format!("{name}: a JSON array must hold only strings, e.g. [\"echo\", \"1\"]")
            ),
            "{src}"
        );
    }
    assert_eq!(
        fail("FROM a\nVOLUME []"),
        (Some(2), "VOLUME needs at least one path".into())
    );
    assert_eq!(
        fail("FROM a\nSHELL sh -c"),
        (
            Some(2),
            "SHELL needs a JSON array, e.g. SHELL [\"/bin/bash\", \"-c\"]".into()
        )
    );
}

#[test]
fn dockerfile_env_label_arg_forms() {
    let k = kinds(
        "ARG V=1 W\nFROM a\nENV k=v k2=\"v 2\"\nENV legacy some value\nLABEL \"org.x\"=y a=b\nMAINTAINER me",
    );
    assert_eq!(
        k[0],
        K::Arg(vec![("V".into(), Some("1".into())), ("W".into(), None)])
    );
    assert_eq!(
        k[2],
        K::Env(vec![
            ("k".into(), "v".into()),
            ("k2".into(), "\"v 2\"".into())
        ])
    );
    assert_eq!(k[3], K::Env(vec![("legacy".into(), "some value".into())]));
    assert_eq!(
        k[4],
        K::Label(vec![
            ("\"org.x\"".into(), "y".into()),
            ("a".into(), "b".into())
        ])
    );
    assert_eq!(k[5], K::Maintainer("me".into()));
}

#[test]
fn dockerfile_copy_flags_and_json() {
    let k = kinds(
        "FROM a\nCOPY --from=build --chown=1000:1000 --chmod=0755 --link a b /dst/\nADD [\"x y.tar\", \"/opt/\"]",
    );
    let K::Copy(c) = &k[1] else { panic!() };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("1000:1000"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert_eq!(
        (c.sources.clone(), c.dest.as_str(), c.add),
        (s(&["a", "b"]), "/dst/", false)
    );
    let K::Copy(c) = &k[2] else { panic!() };
    assert_eq!(
        (c.sources.clone(), c.dest.as_str(), c.add),
        (s(&["x y.tar"]), "/opt/", true)
    );
}

#[test]
fn dockerfile_copy_add_buildkit_flags() {
    let k = kinds(
        "FROM a\nCOPY --link=false --parents --exclude=*.md --exclude='x y' a/./b /d/\nADD --link=TRUE --checksum=sha256:00 --keep-git-dir=false https://h/f.tgz /opt/",
    );
    let K::Copy(c) = &k[1] else { panic!() };
    assert_eq!(
        (c.link, c.parents, c.exclude.clone(), c.checksum.clone()),
        (false, true, s(&["*.md", "x y"]), None)
    );
    let K::Copy(c) = &k[2] else { panic!() };
    assert_eq!(
        (c.link, c.parents, c.checksum.as_deref(), c.sources.clone()),
        (true, false, Some("sha256:00"), s(&["https://h/f.tgz"]))
    );
}

#[test]
fn dockerfile_run_mount_fields() {
    let k = kinds(
        "FROM a\nRUN --mount=type=secret,id=tok,target=/t,required --mount=\"type=cache,Target=/c\" --mount=type=$T,ro cat /t",
    );
    let K::Run { mounts, .. } = &k[1] else {
        panic!()
    };
    let f = |v: &[(&str, Option<&str>)]| MountSpec {
        fields: v
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect(),
    };
    assert_eq!(
        mounts,
        &vec![
            f(&[
                ("type", Some("secret")),
                ("id", Some("tok")),
                ("target", Some("/t")),
                ("required", None)
            ]),
            f(&[("type", Some("cache")), ("target", Some("/c"))]),
            f(&[("type", Some("$T")), ("ro", None)]),
        ]
    );
}

#[test]
fn dockerfile_healthcheck_onbuild_and_config() {
    let k = kinds(
        "FROM a\nHEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms --retries=3 CMD curl -f x\nHEALTHCHECK NONE\nHEALTHCHECK CMD [\"true\"]\nONBUILD RUN make\nWORKDIR /app\nUSER 1000:1000\nEXPOSE 80 53/udp\nVOLUME [\"/data\"]\nVOLUME /a /b\nSTOPSIGNAL SIGTERM",
    );
    let K::Healthcheck(h) = &k[1] else { panic!() };
    assert_eq!(h.test, s(&["CMD-SHELL", "curl -f x"]));
    assert_eq!(h.interval, Some(std::time::Duration::from_secs(30)));
    assert_eq!(h.timeout, Some(std::time::Duration::from_secs(90)));
    assert_eq!(h.start_period, Some(std::time::Duration::from_millis(500)));
    assert_eq!(h.retries, Some(3));
    let K::Healthcheck(h) = &k[2] else { panic!() };
    assert_eq!(h.test, s(&["NONE"]));
    let K::Healthcheck(h) = &k[3] else { panic!() };
    assert_eq!(h.test, s(&["CMD", "true"]));
    let K::OnBuild {
        trigger,
        instruction,
    } = &k[4]
    else {
        panic!()
    };
    assert_eq!(trigger, "RUN make");
    assert!(matches!(instruction.kind, K::Run { .. }));
    assert_eq!(k[5], K::Workdir("/app".into()));
    assert_eq!(k[6], K::User("1000:1000".into()));
    assert_eq!(k[7], K::Expose(s(&["80", "53/udp"])));
    assert_eq!(k[8], K::Volume(s(&["/data"])));
    assert_eq!(k[9], K::Volume(s(&["/a", "/b"])));
    assert_eq!(k[10], K::StopSignal("SIGTERM".into()));
}

#[test]
fn dockerfile_onbuild_triggers_helper() {
    let t = parse_onbuild_triggers(&s(&["COPY . /app", "RUN make"]), '\\', 3).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].line, 3);
    let e = parse_onbuild_triggers(&s(&["FROM x"]), '\\', 3).unwrap_err();
    assert_eq!(e.to_string(), "Dockerfile:3: ONBUILD FROM is not allowed");
}

#[test]
fn dockerfile_parse_errors_with_lines() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "FROM a\nFORM b",
            2,
            "unknown instruction \"FORM\" (did you mean FROM?)",
        ),
        (
            "FROM a\nBOGUSTHING x",
            2,
            "unknown instruction \"BOGUSTHING\"",
        ),
        ("RUN x", 1, "the first instruction must be FROM or ARG"),
        (
            "ARG a\nENV b=c",
            2,
            "the first instruction must be FROM or ARG",
        ),
        (
            "FROM a\n\nCOPY onlyone",
            3,
            "COPY needs at least a source and a destination",
        ),
        (
            "FROM a\nCOPY --frm=x a b",
            2,
            "unknown flag --frm for COPY (it takes --from, --chown, --chmod, --link, --parents, --exclude)",
        ),
        (
            "FROM a\nADD --from=x a b",
            2,
            "unknown flag --from for ADD (it takes --chown, --chmod, --link, --exclude, --checksum, --keep-git-dir)",
        ),
        (
            "FROM a\nCOPY --parents=yes a b",
            2,
            "--parents takes true or false, not \"yes\"",
        ),
        (
            "FROM a\nADD --parents a b",
            2,
            "unknown flag --parents for ADD (it takes --chown, --chmod, --link, --exclude, --checksum, --keep-git-dir)",
        ),
        (
            "FROM a\nADD --keep-git-dir https://x/y.git /",
            2,
            "ADD --keep-git-dir is for git sources, which kiln does not add; clone the repository in a RUN step",
        ),
        (
            "FROM a\nCOPY --exclude a b",
            2,
            "--exclude needs a value: --exclude=...",
        ),
        (
            "FROM a\nCOPY --chown=1 --chown=2 a b",
            2,
            "--chown is given twice",
        ),
        (
            "FROM a\nRUN --mount=type=ssh git clone x",
            2,
            "RUN --mount=type=ssh is not supported: kiln forwards no SSH agent",
        ),
        (
            "FROM a\nRUN --mount=type=volume,target=/c true",
            2,
            "unsupported mount type \"volume\" (kiln takes bind, cache, tmpfs, secret)",
        ),
        (
            "FROM a\nRUN --mount=type=cache,target=/c,colour=red true",
            2,
            "--mount option \"colour\" is unknown; kiln takes type, target, source, from, id, sharing, mode, uid, gid, readonly, readwrite, size, required",
        ),
        (
            "FROM a\nRUN --mount=type=cache,target true",
            2,
            "--mount field \"target\" needs a value: target=...",
        ),
        (
            "FROM a\nRUN --mount=type=cache,target=\"/a b\" true",
            2,
            "--mount=type=cache,target=\"/a b\": a \" inside a field; quote the whole field",
        ),
        (
            "FROM a\nRUN --network=none true",
            2,
            "unknown flag --network for RUN (it takes --mount)",
        ),
        (
            "FROM a\nSHELL /bin/bash -c",
            2,
            "SHELL needs a JSON array, e.g. SHELL [\"/bin/bash\", \"-c\"]",
        ),
        ("FROM a\nENV", 2, "ENV needs key=value"),
        (
            "FROM a\nENV onlykey",
            2,
            "ENV onlykey needs a value: onlykey=value",
        ),
        (
            "FROM a\nENV a=b c",
            2,
            "ENV expects key=value pairs; \"c\" has no =",
        ),
        (
            "FROM a\nHEALTHCHECK --interval=5 CMD x",
            2,
            "--interval=5 is not a duration (e.g. 30s, 1m30s, 500ms)",
        ),
        (
            "FROM a\nHEALTHCHECK x",
            2,
            "HEALTHCHECK expects NONE or [flags] CMD command",
        ),
        (
            "FROM a\nONBUILD ONBUILD RUN x",
            2,
            "ONBUILD ONBUILD is not allowed",
        ),
        (
            "FROM a\nUSER a b",
            2,
            "USER takes exactly one argument, a user name or id",
        ),
        ("FROM a\nWORKDIR", 2, "WORKDIR needs a path"),
        (
            "FROM a b c d",
            1,
            "FROM takes an image and optionally AS name",
        ),
        (
            "FROM a AS 1x",
            1,
            "invalid stage name \"1x\": it must start with a letter and contain only letters, digits, -, _ and .",
        ),
        ("FROM a\nRUN", 2, "RUN needs a command"),
    ];
    for (src, line, msg) in cases {
        let e = parse(src).unwrap_err();
        assert_eq!(
            (e.line(), e.message()),
            (Some(*line), msg.to_string()),
            "{src}"
        );
        assert_eq!(e.to_string(), format!("Dockerfile:{line}: {msg}"));
    }
    assert_eq!(
        parse("# only a comment\n\n").unwrap_err(),
        DockerfileError::Empty
    );
}

#[test]
fn dockerfile_error_columns() {
    let e = parse("FROM a\nCOPY --link --bad a b").unwrap_err();
    assert!(
        matches!(
            e,
            DockerfileError::Line {
                line: 2,
                column: Some(13),
                ..
            }
        ),
        "{e:?}"
    );
    let e = parse("FROM a\nCOPY --link \\\n --bad a b").unwrap_err();
    assert!(
        matches!(
            e,
            DockerfileError::Line {
                line: 2,
                column: None,
                ..
            }
        ),
        "{e:?}"
    );
}
