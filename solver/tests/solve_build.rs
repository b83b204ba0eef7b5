//! Solving real definitions against the real snapshotter and namespace executor: results, failures,
//! parallel stages, concurrent solves and lazy image pulls.

#[path = "solve_support.rs"]
mod support;

use std::sync::atomic::Ordering;

use llb::{DefinitionBuilder, ExecOp, MergeOp, Metadata, Op, SourceOp};
use solver::{EventKind, SolveError};
use support::{definition, span_of, Env};

/// busybox, two independent RUN stages that each sleep and write a file, merged (`COPY --link` style).
fn two_stages() -> llb::Definition {
    let mut b = DefinitionBuilder::new();
    let image = SourceOp::image("docker.io/library/busybox:latest", None);
    let base = b.source(image, None, Metadata::described("[a 1/2] FROM busybox")).unwrap();
    let run = |script: &str| {
        let mut e = ExecOp::new(vec!["/bin/sh".into(), "-c".into(), script.into()], Some(0));
        e.meta.env = vec!["PATH=/bin".into()];
        e.meta.cwd = "/".into();
        Op::Exec(e)
    };
    let a = b.add_op(run("sleep 1; echo a > /a"), &[base], None, Metadata::described("[a 2/2] RUN a")).unwrap();
    let c = b.add_op(run("sleep 1; echo b > /b"), &[base], None, Metadata::described("[b 2/2] RUN b")).unwrap();
    let merged = b.add_op(Op::Merge(MergeOp {}), &[a, c], None, Metadata::described("merge")).unwrap();
    b.finish(Some(merged)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn independent_stages_run_in_parallel_and_merge() {
    require_root!();
    let env = Env::new();
    let (opts, mut events) = env.options();
    let solved = env.solver.solve(&two_stages(), opts).await.unwrap();
    let events = events.drain();
    let (a_start, a_end) = span_of(&events, "RUN a");
    let (b_start, b_end) = span_of(&events, "RUN b");
    assert!(a_start < b_end && b_start < a_end, "the two stages did not overlap: {events:#?}");
    let out = env.export(&solved.root);
    assert_eq!(std::fs::read_to_string(out.path().join("a")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(out.path().join("b")).unwrap(), "b\n");
    assert!(out.path().join("bin/busybox").exists());
    assert_eq!(solved.executed, 4, "image, two runs, merge: {solved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_solve_is_one_cache_hit_and_never_unpacks_the_image() {
    require_root!();
    let env = Env::new();
    let def = two_stages();
    let (opts, _events) = env.options();
    env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(env.images.unpacks.load(Ordering::SeqCst), 1);

    let (opts, mut events) = env.options();
    let again = env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(again.executed, 0, "{again:?}");
    assert_eq!(again.cached, 1, "the root's hit skips everything below it: {again:?}");
    assert_eq!(env.images.unpacks.load(Ordering::SeqCst), 1, "the image under the hit was unpacked again");
    let events = events.drain();
    assert!(events.iter().any(|e| e.kind == EventKind::Cached { source: None }));
    assert!(support::executed_names(&again).is_empty(), "{again:#?}");

    // --no-cache runs everything again.
    let (mut opts, _events) = env.options();
    opts.no_cache = true;
    let fresh = env.solver.solve(&def, opts).await.unwrap();
    assert_eq!(fresh.executed, 4, "{fresh:?}");
    let out = env.export(&fresh.root);
    assert!(out.path().join("a").exists() && out.path().join("b").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_solves_execute_each_vertex_once() {
    require_root!();
    let env = Env::new();
    let def = two_stages();
    let (o1, _e1) = env.options();
    let (o2, _e2) = env.options();
    let (r1, r2) = tokio::join!(env.solver.solve(&def, o1), env.solver.solve(&def, o2));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.root, r2.root);
    assert_eq!(r1.executed + r2.executed, 4, "{r1:?} {r2:?}");
    assert!(r1.shared + r2.shared >= 1, "the second solve joined the first one's work: {r1:?} {r2:?}");
    assert_eq!(env.images.unpacks.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_run_names_its_line_command_status_and_output() {
    require_root!();
    let env = Env::new();
    let def = definition("FROM busybox\nRUN echo one; echo two >&2; exit 3\n", &[]);
    let (opts, mut events) = env.options();
    let err = env.solver.solve(&def, opts).await.unwrap_err();
    let SolveError::Run(f) = &err else { panic!("expected a run failure, got {err}") };
    assert_eq!(f.exit_code, 3);
    assert_eq!(f.locations[0].start_line, 2);
    assert_eq!(f.command, "/bin/sh -c echo one; echo two >&2; exit 3");
    let mut tail = f.tail.clone();
    tail.sort();
    assert_eq!(tail, ["one", "two"]);
    let shown = err.to_string();
    assert!(shown.starts_with("Dockerfile:2 [2/2] RUN echo one"), "{shown}");
    assert!(shown.contains("exit code: 3"), "{shown}");
    let events = events.drain();
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::Log { line, .. } if line == b"one")));
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::Failed { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_mounts_cache_tmpfs_and_secret_and_a_missing_secret_says_how_to_pass_it() {
    require_root!();
    let env = Env::new();
    let df = "FROM busybox\n\
              RUN --mount=type=cache,target=/cache --mount=type=tmpfs,target=/t --mount=type=secret,id=tok,required=true \
              echo x >> /cache/log && cat /cache/log | wc -l > /count && cat /run/secrets/tok > /t/s && \
              test \"$(cat /t/s)\" = hunter2\n";
    let def = definition(df, &[]);
    let (opts, _e) = env.options();
    let err = env.solver.solve(&def, opts).await.unwrap_err();
    assert!(matches!(err, SolveError::MissingSecret { .. }), "{err}");
    assert!(err.to_string().contains("--secret id=tok,src="), "{err}");

    for expected in ["1", "2"] {
        let (mut opts, _e) = env.options();
        opts.secrets = std::sync::Arc::new(solver::StaticSecrets([("tok".to_string(), b"hunter2".to_vec())].into()));
        opts.no_cache = true;
        let solved = env.solver.solve(&def, opts).await.unwrap();
        let out = env.export(&solved.root);
        assert_eq!(std::fs::read_to_string(out.path().join("count")).unwrap().trim(), expected);
        assert!(!out.path().join("run/secrets/tok").exists(), "the secret's mount point stayed in the snapshot");
        assert!(!out.path().join("cache/log").exists(), "the cache mount's content leaked into the snapshot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multi_stage_dockerfile_builds_the_right_files() {
    require_root!();
    let env = Env::new();
    env.write("greeting.txt", "hello\n");
    let df = "FROM busybox AS build\n\
              WORKDIR /src\n\
              COPY greeting.txt .\n\
              RUN tr a-z A-Z < greeting.txt > shout.txt\n\
              FROM busybox AS other\n\
              RUN echo other > /other\n\
              FROM scratch\n\
              COPY --from=build /src/shout.txt /out/\n\
              COPY --link --from=other /other /out/other\n";
    let def = definition(df, &[]);
    let (opts, _e) = env.options();
    let solved = env.solver.solve(&def, opts).await.unwrap();
    let out = env.export(&solved.root);
    assert_eq!(std::fs::read_to_string(out.path().join("out/shout.txt")).unwrap(), "HELLO\n");
    assert_eq!(std::fs::read_to_string(out.path().join("out/other")).unwrap(), "other\n");
    assert!(!out.path().join("bin").exists(), "the final stage is FROM scratch");
}
