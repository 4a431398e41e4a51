use std::collections::HashMap;

use super::{fail, graph};
use crate::dockerfile::{
    Base, BaseImage, CacheSharing, ConfigChange as C, CopyFrom, EvalOptions, RunMount, ShellOrExec,
    StepKind, evaluate, parse,
};

fn env_of(k: &StepKind) -> Vec<(String, String)> {
    match k {
        StepKind::Run { env, .. } => env.clone(),
        other => panic!("not RUN: {other:?}"),
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn dockerfile_global_and_stage_args() {
    let src = "ARG TAG=1.0\nARG REG=127.0.0.1:5000\nFROM $REG/base/busybox:${TAG} AS one\nRUN echo $TAG\nARG TAG\nRUN echo $TAG\nARG LOCAL=${TAG}-x\nWORKDIR /w/${LOCAL}\n";
    let g = graph(src, &[], None).unwrap();
    let s = &g.stages[0];
    assert_eq!(
        s.base,
        Base::Image {
            reference: "127.0.0.1:5000/base/busybox:1.0".into(),
            platform: None
        }
    );
    // Global ARGs are not visible until redeclared.
    assert_eq!(env_of(&s.steps[0].kind), vec![]);
    assert_eq!(env_of(&s.steps[1].kind), pairs(&[("TAG", "1.0")]));
    assert_eq!(s.steps[1].resolved, "RUN |1 TAG=1.0 echo $TAG");
    assert_eq!(
        s.steps[2].kind,
        StepKind::Config(C::Workdir("/w/1.0-x".into()))
    );
}

#[test]
fn dockerfile_arg_scoping() {
    // A global redeclared without a value takes the global's value; a stage
    // default wins over the global unless a build arg is given.
    let src = "ARG G=global\nARG D=global-d\nFROM a\nARG G\nARG D=stage-d\nRUN x\n";
    let g = graph(src, &[], None).unwrap();
    assert_eq!(
        env_of(&g.stages[0].steps[0].kind),
        pairs(&[("G", "global"), ("D", "stage-d")])
    );
    let g = graph(src, &[("D", "cli")], None).unwrap();
    assert_eq!(
        env_of(&g.stages[0].steps[0].kind),
        pairs(&[("G", "global"), ("D", "cli")])
    );
    // Names and defaults are substituted in the scope so far, globals too
    // (and a global is in a stage's scope only once redeclared there).
    let src = "ARG P=pre\nARG ${P}_G=g\nFROM a\nARG ${P}_G\nARG P\nARG ${P}_G\nARG n=two\nARG prefix_${n}=v ${n}_b=${prefix_two}\nRUN x\n";
    let g = graph(src, &[], None).unwrap();
    assert_eq!(
        env_of(&g.stages[0].steps[0].kind),
        pairs(&[
            ("P", "pre"),
            ("pre_G", "g"),
            ("n", "two"),
            ("prefix_two", "v"),
            ("two_b", "v")
        ])
    );
    // A build arg names the substituted name.
    let g = graph(src, &[("prefix_two", "cli")], None).unwrap();
    assert_eq!(
        env_of(&g.stages[0].steps[0].kind)[3],
        ("prefix_two".to_string(), "cli".to_string())
    );
    assert_eq!(
        fail("FROM a\nARG ${NOPE}"),
        (
            Some(2),
            "invalid ARG name \"${NOPE}\" (it is \"\" after substitution)".into()
        )
    );
}

#[test]
fn dockerfile_stage_built_on_a_stage_inherits_its_args() {
    let src = "ARG V=g\nFROM a AS base\nARG V\nARG B=base\nENV E=env\nFROM base AS child\nRUN x\nWORKDIR /$B/$V/$E\nARG B=child\nRUN y\nFROM a\nRUN z\n";
    let g = graph(src, &[], None).unwrap();
    let child = &g.stages[1].steps;
    assert_eq!(env_of(&child[0].kind), pairs(&[("V", "g"), ("B", "base")]));
    assert_eq!(
        child[1].kind,
        StepKind::Config(C::Workdir("/base/g/env".into()))
    );
    assert_eq!(env_of(&child[2].kind), pairs(&[("V", "g"), ("B", "child")]));
    // A stage from an image starts with no ARGs.
    assert_eq!(env_of(&g.stages[2].steps[0].kind), vec![]);
}

#[test]
fn dockerfile_build_args_override_declared_and_warn_on_others() {
    let src = "ARG TAG=1.0\nFROM busybox:$TAG\nARG MODE=debug\nARG TAG\nRUN build\n";
    let g = graph(
        src,
        &[
            ("TAG", "2.0"),
            ("MODE", "release"),
            ("NOPE", "x"),
            ("http_proxy", "p"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        g.stages[0].base,
        Base::Image {
            reference: "busybox:2.0".into(),
            platform: None
        }
    );
    assert_eq!(
        env_of(&g.stages[0].steps[0].kind),
        pairs(&[("MODE", "release"), ("TAG", "2.0"), ("http_proxy", "p")])
    );
    assert_eq!(
        g.warnings,
        vec!["build-arg NOPE was not consumed: no ARG NOPE in the Dockerfile".to_string()]
    );
}

#[test]
fn dockerfile_env_scoping_and_inheritance() {
    let src = "FROM a AS base\nARG V=arg\nENV V=env W=$V\nENV X=\"$W and ${V:+set}\" Y='$V'\nRUN true\nFROM base\nWORKDIR /$X\nFROM a\nWORKDIR /${X:-none}";
    let g = graph(src, &[], None).unwrap();
    let st = &g.stages[0].steps;
    // On one line, every value sees the scope from before the line: W gets
    // the ARG V, not the ENV V set beside it (Docker's rule).
    assert_eq!(
        st[0].kind,
        StepKind::Config(C::Env(pairs(&[("V", "env"), ("W", "arg")])))
    );
    assert_eq!(
        st[1].kind,
        StepKind::Config(C::Env(pairs(&[("X", "arg and set"), ("Y", "$V")])))
    );
    assert_eq!(st[1].resolved, "ENV X=\"arg and set\" Y=\"$V\"");
    // ENV wins over ARG, so V is not passed again as an arg.
    assert_eq!(env_of(&st[2].kind), vec![]);
    assert_eq!(g.stages[1].base, Base::Stage(0));
    assert_eq!(
        g.stages[1].steps[0].kind,
        StepKind::Config(C::Workdir("/arg and set".into()))
    );
    assert_eq!(
        g.stages[2].steps[0].kind,
        StepKind::Config(C::Workdir("/none".into()))
    );
}

#[test]
fn dockerfile_env_line_sees_the_scope_before_it() {
    let src = "FROM a\nENV a=one\nENV a=two b=$a c=${a}-x\nENV $a=named\nWORKDIR /$b/$c/$two";
    let g = graph(src, &[], None).unwrap();
    let st = &g.stages[0].steps;
    assert_eq!(
        st[1].kind,
        StepKind::Config(C::Env(pairs(&[("a", "two"), ("b", "one"), ("c", "one-x")])))
    );
    // Names are substituted too, as in Docker.
    assert_eq!(
        st[2].kind,
        StepKind::Config(C::Env(pairs(&[("two", "named")])))
    );
    assert_eq!(
        st[3].kind,
        StepKind::Config(C::Workdir("/one/one-x/named".into()))
    );
    assert_eq!(
        fail("FROM a\nENV $NOPE=x"),
        (
            Some(2),
            "ENV name \"$NOPE\" is empty after substitution".into()
        )
    );
}

#[test]
fn dockerfile_multistage_target_pruning_and_copy_from() {
    let src = "FROM a AS deps\nRUN x\nFROM a AS unused\nRUN y\nFROM scratch AS tools\nCOPY --from=0 /x /x\nFROM deps AS final\nCOPY --from=tools /x /y\nCOPY --from=127.0.0.1:5000/other:1 /z /z\nFROM a\nRUN z";
    let g = graph(src, &[], Some("final")).unwrap();
    assert_eq!(g.target, 3);
    assert_eq!(g.order, vec![0, 2, 3]);
    assert_eq!(g.stages[2].base, Base::Scratch);
    let StepKind::Copy { from, .. } = &g.stages[2].steps[0].kind else {
        panic!()
    };
    assert_eq!(from, &Some(CopyFrom::Stage(0)));
    let StepKind::Copy { from, .. } = &g.stages[3].steps[0].kind else {
        panic!()
    };
    assert_eq!(from, &Some(CopyFrom::Stage(2)));
    let StepKind::Copy { from, .. } = &g.stages[3].steps[1].kind else {
        panic!()
    };
    assert_eq!(
        from,
        &Some(CopyFrom::Image("127.0.0.1:5000/other:1".into()))
    );
    // Without a target, the last stage.
    let g = graph(src, &[], None).unwrap();
    assert_eq!((g.target, g.order.clone()), (4, vec![4]));
    let e = graph(src, &[], Some("nope")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "target stage \"nope\" not found; the stages are: deps, unused, tools, final, 4"
    );
}

#[test]
fn dockerfile_target_ignores_errors_in_stages_it_does_not_need() {
    let src = "ARG BASE=a\nFROM $BASE AS deps\nRUN x\n\
FROM a AS broken\nWORKDIR ${NEED:?set NEED}\n\
FROM $NOPE AS nofrom\n\
FROM a AS badcopy\nCOPY --chmod=9x x /x\n\
FROM a AS badfrom\nCOPY --from=later /x /x\n\
FROM deps AS later\nCOPY --from=0 /y /y\n\
FROM scratch AS final\nCOPY --from=later /z /z\nMAINTAINER me\n\
FROM broken AS onbroken\nRUN y\n";
    let g = graph(src, &[], Some("final")).unwrap();
    assert_eq!((g.target, g.order.clone()), (6, vec![0, 5, 6]));
    // The unneeded stages are there, as far as they got.
    assert_eq!(g.stages.len(), 8);
    assert_eq!(g.stages[2].name.as_deref(), Some("nofrom"));
    assert_eq!(g.stages[2].base, Base::Scratch);
    assert_eq!(g.stages[7].base, Base::Stage(1));
    // Only needed stages' warnings.
    assert_eq!(g.warnings.len(), 1, "{:?}", g.warnings);
    // Each broken stage fails a build that needs it, with its own line.
    let cases: &[(&str, usize, &str)] = &[
        ("broken", 5, "substitution failed: NEED: set NEED"),
        (
            "nofrom",
            6,
            "FROM's image is empty after substitution (is the ARG set?)",
        ),
        ("badcopy", 8, "--chmod=9x is not an octal mode such as 0755"),
        (
            "badfrom",
            10,
            "COPY --from=later: stage \"later\" is defined after this one; stages can only copy from earlier ones",
        ),
        // Through FROM: the base's error, at the base's line.
        ("onbroken", 5, "substitution failed: NEED: set NEED"),
    ];
    for (target, line, msg) in cases {
        let e = graph(src, &[], Some(target)).unwrap_err();
        assert_eq!(
            (e.line(), e.message()),
            (Some(*line), msg.to_string()),
            "{target}"
        );
    }
    // Without --target the last stage is built, and it needs `broken`.
    assert_eq!(graph(src, &[], None).unwrap_err().line(), Some(5));
    // A needed stage that is found only through a mount's from=.
    let src = "FROM a AS tool\nWORKDIR ${X:?no X}\nFROM a\nRUN --mount=from=tool,target=/t t";
    assert_eq!(fail(src), (Some(2), "substitution failed: X: no X".into()));
    // Errors outside stages fail every build.
    assert_eq!(
        graph("ARG A=${B:?global}\nFROM a AS x\nFROM b", &[], Some("x"))
            .unwrap_err()
            .line(),
        Some(1)
    );
    assert_eq!(
        graph("FROM a AS x\nFROM a AS y\nFROM a AS X", &[], Some("y"))
            .unwrap_err()
            .to_string(),
        "Dockerfile:3: duplicate stage name \"x\""
    );
}

#[test]
fn dockerfile_copy_resolution() {
    let src = "FROM a\nARG O=1000\nCOPY --chown=$O:$O --chmod=755 [\"a b\", \"c*\", \"/d/\"]\nADD x.tar /opt/";
    let g = graph(src, &[], None).unwrap();
    let s = &g.stages[0].steps[0];
    assert_eq!(
        s.kind,
        StepKind::Copy {
            sources: vec!["a b".into(), "c*".into()],
            dest: "/d/".into(),
            from: None,
            chown: Some("1000:1000".into()),
            chmod: Some(0o755),
            add: false,
            link: false,
            parents: false,
            exclude: vec![],
            checksum: None,
            inline: vec![],
        }
    );
    assert_eq!(
        s.resolved,
        "COPY --chown=1000:1000 --chmod=755 \"a b\" c* /d/"
    );
    let StepKind::Copy { add, .. } = g.stages[0].steps[1].kind else {
        panic!()
    };
    assert!(add);
}

#[test]
fn dockerfile_copy_add_flags_resolved() {
    let sum = "sha256:".to_string() + &"ab".repeat(32);
    let src = format!(
        "FROM a\nARG X=*.md\nCOPY --link --parents --exclude=$X --exclude=tmp a/./b /d/\nARG U=https://example.com/f.tgz\nADD --checksum={sum} $U /opt/\nADD http://x/y.git.tgz /z"
    );
    let g = graph(&src, &[], None).unwrap();
    let st = &g.stages[0].steps;
    let StepKind::Copy {
        link,
        parents,
        exclude,
        checksum,
        ..
    } = &st[0].kind
    else {
        panic!()
    };
    assert_eq!(
        (*link, *parents, exclude.clone(), checksum.clone()),
        (
            true,
            true,
            vec!["*.md".to_string(), "tmp".to_string()],
            None
        )
    );
    assert_eq!(
        st[0].resolved,
        "COPY --link --parents --exclude=*.md --exclude=tmp a/./b /d/"
    );
    // ADD <url> is evaluated now; the URL stays a source.
    let StepKind::Copy {
        sources,
        checksum,
        add,
        ..
    } = &st[1].kind
    else {
        panic!()
    };
    assert_eq!(
        (sources.clone(), checksum.clone(), *add),
        (
            vec!["https://example.com/f.tgz".to_string()],
            Some(sum.clone()),
            true
        )
    );
    assert_eq!(
        st[1].resolved,
        format!("ADD --checksum={sum} https://example.com/f.tgz /opt/")
    );
    // Only a path ending in .git makes an http URL a git source.
    assert!(
        matches!(&st[2].kind, StepKind::Copy { sources, .. } if sources[0] == "http://x/y.git.tgz")
    );
}

#[test]
fn dockerfile_copy_source_empty_after_substitution() {
    // As BuildKit: the root of the context, copied whole, with a warning.
    let g = graph("FROM a\nARG SRC\n\nCOPY ok ${SRC} /d/", &[], None).unwrap();
    assert!(
        matches!(&g.stages[0].steps[0].kind, StepKind::Copy { sources, .. } if sources == &["ok", "."])
    );
    assert_eq!(
        g.warnings,
        [
            "Dockerfile:4: COPY source \"${SRC}\" is empty after substitution: the whole build context is copied, as Docker does (is the ARG set?)"
        ]
    );
    let g = graph("FROM a\nADD \"$NOPE\" /d/", &[], None).unwrap();
    assert!(g.warnings[0].contains("ADD source"), "{:?}", g.warnings);
    // An empty destination is the working directory.
    let g = graph("FROM a\nCOPY x $NOPE", &[], None).unwrap();
    assert!(matches!(&g.stages[0].steps[0].kind, StepKind::Copy { dest, .. } if dest == "./"));
}

#[test]
fn dockerfile_run_mounts() {
    let src = "FROM a AS deps\nRUN x\nFROM a AS unused\nFROM a\nARG C=pip\nARG S=tok\n\
RUN --mount=type=secret,id=$S,target=/t,required --mount=type=secret,source=b cat /t\n\
RUN --mount=type=cache,target=/root/.cache/$C/ \\\n --mount=type=cache,id=x,target=c,sharing=LOCKED,from=deps,source=/s,mode=0700,uid=1000,gid=100,ro \\\n --mount=target=/src \\\n --mount=type=bind,src=app,dst=/app,from=deps,rw=true \\\n --mount=type=tmpfs,target=/tmp,size=64m \\\n --mount=type=bind,target=/img,from=example.com/i:1,ro=false,rw=false make\n";
    let g = graph(src, &[], None).unwrap();
    let st = &g.stages[2].steps;
    let StepKind::Run {
        secrets, mounts, ..
    } = &st[0].kind
    else {
        panic!()
    };
    assert_eq!(
        secrets
            .iter()
            .map(|s| (s.id.as_str(), s.target.as_deref(), s.required))
            .collect::<Vec<_>>(),
        vec![("tok", Some("/t"), true), ("b", None, false)]
    );
    assert!(mounts.is_empty());
    let StepKind::Run {
        secrets, mounts, ..
    } = &st[1].kind
    else {
        panic!()
    };
    assert!(secrets.is_empty());
    assert_eq!(
        mounts,
        &vec![
            RunMount::Cache {
                target: "/root/.cache/pip/".into(),
                id: "/root/.cache/pip".into(),
                sharing: CacheSharing::Shared,
                from: None,
                source: None,
                mode: 0o755,
                uid: 0,
                gid: 0,
                readonly: false,
            },
            RunMount::Cache {
                target: "c".into(),
                id: "x".into(),
                sharing: CacheSharing::Locked,
                from: Some(CopyFrom::Stage(0)),
                source: Some("/s".into()),
                mode: 0o700,
                uid: 1000,
                gid: 100,
                readonly: true,
            },
            RunMount::Bind {
                target: "/src".into(),
                source: "/".into(),
                from: None,
                readwrite: false,
            },
            RunMount::Bind {
                target: "/app".into(),
                source: "app".into(),
                from: Some(CopyFrom::Stage(0)),
                readwrite: true,
            },
            RunMount::Tmpfs {
                target: "/tmp".into(),
                size: Some(64 << 20),
            },
            RunMount::Bind {
                target: "/img".into(),
                source: "/".into(),
                from: Some(CopyFrom::Image("example.com/i:1".into())),
                readwrite: false,
            },
        ]
    );
    assert_eq!(
        st[1].resolved,
        "RUN |2 C=pip S=tok --mount=type=cache,id=/root/.cache/pip,target=/root/.cache/pip/,sharing=shared,mode=755,uid=0,gid=0 \
--mount=type=cache,id=x,target=c,sharing=locked,from=stage:0,source=/s,mode=700,uid=1000,gid=100,ro \
--mount=type=bind,target=/src,source=/ --mount=type=bind,target=/app,source=app,from=stage:0,rw \
--mount=type=tmpfs,target=/tmp,size=67108864 --mount=type=bind,target=/img,source=/,from=image:example.com/i:1 make"
    );
    // A mount's from= is a dependency: deps is built, unused is not.
    assert_eq!(g.order, vec![0, 2]);
}

#[test]
fn dockerfile_run_mount_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "RUN --mount=type=secret true",
            "--mount=type=secret: needs id=NAME or target=PATH",
        ),
        (
            "RUN --mount=type=secret,id=a,source=b true",
            "--mount=type=secret: give id= or source= (the same thing), not both",
        ),
        (
            "RUN --mount=type=secret,id=a,mode=0400 true",
            "--mount=type=secret: mode= is not supported for secrets yet",
        ),
        (
            "RUN --mount=type=secret,id=a,from=x true",
            "--mount=type=secret: from= is not for secret mounts",
        ),
        (
            "RUN --mount=type=cache true",
            "--mount=type=cache: needs target=PATH, where it is mounted",
        ),
        (
            "RUN --mount=type=cache,target=/x/.. true",
            "--mount=type=cache: \"/x/..\" cannot be a mount target",
        ),
        (
            "RUN --mount=type=cache,target=/c,sharing=all true",
            "--mount=type=cache: sharing=all is not shared, private or locked",
        ),
        (
            "RUN --mount=type=cache,target=/c,mode=999 true",
            "--mount=type=cache: mode=999 is not an octal mode such as 0755",
        ),
        (
            "RUN --mount=type=cache,target=/c,uid=me true",
            "--mount=type=cache: uid=me is not a numeric user id",
        ),
        (
            "RUN --mount=type=cache,target=/c,required true",
            "--mount=type=cache: required= is only for secret mounts",
        ),
        (
            "RUN --mount=type=bind,target=/c,uid=1 true",
            "--mount=type=bind: uid= is not for bind mounts",
        ),
        (
            "RUN --mount=type=tmpfs,target=/c,size=lots true",
            "--mount=type=tmpfs: size=lots is not a size such as 64m or 1g",
        ),
        (
            "RUN --mount=type=tmpfs,target=/c,from=x true",
            "--mount=type=tmpfs: from= is not for tmpfs mounts",
        ),
        (
            "RUN --mount=type=bind,target=/c,ro=maybe true",
            "--mount ro=maybe is not true or false",
        ),
        (
            "ARG T=ssh\nRUN --mount=type=$T true",
            "RUN --mount=type=ssh is not supported: kiln forwards no SSH agent",
        ),
        (
            "RUN --mount=type=bind,target=/c,from=later true\nFROM a AS later\nCOPY --from=0 /x /x",
            "RUN --mount from=later: stage \"later\" is defined after this one; stages can only copy from earlier ones",
        ),
        (
            "RUN --mount=type=cache,target=/c,from=0 true",
            "RUN --mount from=0 refers to its own stage",
        ),
    ];
    for (body, msg) in cases {
        let src = format!("FROM a\n{body}");
        let line = if body.starts_with("ARG") { 3 } else { 2 };
        assert_eq!(fail(&src), (Some(line), msg.to_string()), "{src}");
    }
}

#[test]
fn dockerfile_config_steps() {
    let src = "FROM a\nARG P=8080\nEXPOSE $P 53/udp 7000-7001\nVOLUME /data $P\nUSER ${U:-app}\nSTOPSIGNAL SIGINT\nCMD [\"run\"]\nENTRYPOINT /bin/app $P\nSHELL [\"/bin/bash\", \"-c\"]\nONBUILD COPY . /app\nMAINTAINER me";
    let g = graph(src, &[], None).unwrap();
    let k: Vec<StepKind> = g.stages[0].steps.iter().map(|s| s.kind.clone()).collect();
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        k[0],
        StepKind::Config(C::Expose(v(&[
            "8080/tcp", "53/udp", "7000/tcp", "7001/tcp"
        ])))
    );
    assert_eq!(k[1], StepKind::Config(C::Volume(v(&["/data", "8080"]))));
    assert_eq!(k[2], StepKind::Config(C::User("app".into())));
    assert_eq!(k[3], StepKind::Config(C::StopSignal("SIGINT".into())));
    assert_eq!(
        k[4],
        StepKind::Config(C::Cmd(ShellOrExec::Exec(v(&["run"]))))
    );
    // CMD and ENTRYPOINT are left to the shell.
    assert_eq!(
        k[5],
        StepKind::Config(C::Entrypoint {
            command: ShellOrExec::Shell("/bin/app $P".into()),
            reset_cmd: false
        })
    );
    assert_eq!(k[6], StepKind::Config(C::Shell(v(&["/bin/bash", "-c"]))));
    assert_eq!(k[7], StepKind::Config(C::OnBuild("COPY . /app".into())));
    // MAINTAINER sets the author, and adds no label.
    assert_eq!(k[8], StepKind::Config(C::Author("me".into())));
    assert_eq!(g.stages[0].steps[8].resolved, "MAINTAINER me");
    assert_eq!(g.warnings.len(), 1);
    assert_eq!(g.stages[0].steps[0].text, "EXPOSE $P 53/udp 7000-7001");
}

#[test]
fn dockerfile_entrypoint_resets_cmd_only_without_a_cmd_in_the_stage() {
    let src = "FROM a AS one\nENTRYPOINT [\"x\"]\nCMD [\"c\"]\nENTRYPOINT [\"y\"]\nFROM one\nENTRYPOINT z";
    let g = graph(src, &[], None).unwrap();
    let resets = |s: usize| -> Vec<bool> {
        g.stages[s]
            .steps
            .iter()
            .filter_map(|st| match &st.kind {
                StepKind::Config(C::Entrypoint { reset_cmd, .. }) => Some(*reset_cmd),
                _ => None,
            })
            .collect()
    };
    // Before the stage's CMD: reset; after it: kept.
    assert_eq!(resets(0), vec![true, false]);
    // A stage built on it starts without a CMD of its own.
    assert_eq!(resets(1), vec![true]);
    // A CMD run as a base's ONBUILD trigger counts for the stage running it.
    let g = graph(
        "FROM a AS lib\nONBUILD CMD [\"t\"]\nFROM lib\nENTRYPOINT [\"e\"]",
        &[],
        None,
    )
    .unwrap();
    assert_eq!(
        g.stages[1].steps[1].kind,
        StepKind::Config(C::Entrypoint {
            command: ShellOrExec::Exec(vec!["e".into()]),
            reset_cmd: false
        })
    );
}

#[test]
fn dockerfile_onbuild_triggers_run_after_from() {
    // A stage with ONBUILD used as a base runs them; its own steps follow.
    let g = graph(
        "FROM a AS lib\nONBUILD RUN echo trig\nFROM lib\nRUN mine",
        &[],
        None,
    )
    .unwrap();
    let steps = &g.stages[1].steps;
    assert_eq!(steps[0].text, "RUN echo trig");
    assert_eq!(steps[0].line, 3);
    assert_eq!(steps[1].text, "RUN mine");
    // And a base image's, given by the executor, with the image's ENV.
    let df = parse("FROM img\nWORKDIR $HOME").unwrap();
    let mut base_images = HashMap::new();
    base_images.insert(
        "img".to_string(),
        BaseImage {
            env: pairs(&[("HOME", "/root")]),
            onbuild: vec!["COPY . /src".into()],
        },
    );
    let g = evaluate(
        &df,
        &EvalOptions {
            base_images,
            ..EvalOptions::default()
        },
    )
    .unwrap();
    let k: Vec<&StepKind> = g.stages[0].steps.iter().map(|s| &s.kind).collect();
    assert!(matches!(k[0], StepKind::Copy { .. }));
    assert_eq!(k[1], &StepKind::Config(C::Workdir("/root".into())));
}

#[test]
fn dockerfile_platform_args() {
    let src = "FROM --platform=$BUILDPLATFORM a AS b\nARG TARGETARCH\nRUN echo $TARGETARCH";
    let df = parse(src).unwrap();
    let opts = EvalOptions {
        platform: "linux/arm64".into(),
        ..EvalOptions::default()
    };
    let g = evaluate(&df, &opts).unwrap();
    assert_eq!(
        g.stages[0].base,
        Base::Image {
            reference: "a".into(),
            platform: Some("linux/arm64".into())
        }
    );
    assert_eq!(
        env_of(&g.stages[0].steps[0].kind),
        pairs(&[("TARGETARCH", "arm64")])
    );
}

#[test]
fn dockerfile_eval_errors_with_lines() {
    let cases: &[(&str, usize, &str)] = &[
        ("FROM a AS x\nFROM b AS X", 2, "duplicate stage name \"x\""),
        (
            "FROM a AS x\nCOPY --from=x a b",
            2,
            "COPY --from=x refers to its own stage",
        ),
        (
            "FROM a\nCOPY --from=3 a b",
            2,
            "COPY --from=3: there is no stage 3 before this one",
        ),
        (
            "FROM a\nCOPY --chmod=999 a b",
            2,
            "--chmod=999 is not an octal mode such as 0755",
        ),
        (
            "ARG IMG\nFROM $IMG",
            2,
            "FROM's image is empty after substitution (is the ARG set?)",
        ),
        (
            "FROM a\nARG U=https://x/y.git#main\nADD $U /",
            3,
            "ADD from a git repository is not supported (https://x/y.git#main); clone it in a RUN step",
        ),
        (
            "FROM a\nADD git@github.com:o/r /",
            2,
            "ADD from a git repository is not supported (git@github.com:o/r); clone it in a RUN step",
        ),
        (
            "FROM a\nCOPY https://x/y /",
            2,
            "COPY cannot take a URL (https://x/y); ADD downloads one",
        ),
        (
            "FROM a\nADD --checksum=sha256:abc https://x/y /",
            2,
            "--checksum=sha256:abc is not a digest such as sha256:<64 hex digits>",
        ),
        (
            "FROM a\nARG D=sha256:0000000000000000000000000000000000000000000000000000000000000000\nADD --checksum=$D y /",
            3,
            "ADD --checksum is only for a source downloaded over http(s)",
        ),
        (
            "FROM a\nADD --checksum=sha512:0 https://x/y /",
            2,
            "--checksum=sha512:0 is not a digest such as sha256:<64 hex digits>",
        ),
        (
            "FROM a\nEXPOSE 80/xyz",
            2,
            "EXPOSE \"80/xyz\" is not a port: expected PORT[-PORT][/tcp|udp|sctp]",
        ),
        (
            "FROM a\nWORKDIR ${NEED:?set NEED}",
            2,
            "substitution failed: NEED: set NEED",
        ),
    ];
    for (src, line, msg) in cases {
        assert_eq!(fail(src), (Some(*line), msg.to_string()), "{src}");
    }
}
