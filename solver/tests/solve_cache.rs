//! Cache behaviour over a real build context: what a context change re-runs, and what it does not.

#[path = "solve_support.rs"]
mod support;

use support::{definition, definition_with, executed_names, Env};

const DOCKERFILE: &str = "FROM busybox\n\
                          RUN echo base > /base\n\
                          COPY a.txt /a.txt\n\
                          RUN cat /a.txt > /copy\n\
                          COPY sub/ /ctx/\n";

async fn solve(env: &Env, def: &llb::Definition) -> (solver::Solved, Vec<String>) {
    let (opts, _events) = env.options();
    let solved = env.solver.solve(def, opts).await.unwrap();
    let ran = executed_names(&solved);
    (solved, ran)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn context_changes_rerun_exactly_the_steps_that_read_them() {
    require_root!();
    let env = Env::new();
    env.write("a.txt", "one\n");
    env.write("b.txt", "unselected\n");
    env.write("sub/x.txt", "x\n");
    env.write("sub/ignored.txt", "ignored\n");
    let def = definition(DOCKERFILE, &["sub/ignored.txt"]);

    let (first, ran) = solve(&env, &def).await;
    assert!(ran.iter().any(|n| n.contains("RUN echo base")), "{ran:?}");
    let out = env.export(&first.root);
    assert_eq!(std::fs::read_to_string(out.path().join("copy")).unwrap(), "one\n");
    assert_eq!(std::fs::read_to_string(out.path().join("ctx/x.txt")).unwrap(), "x\n");
    assert!(!out.path().join("ctx/ignored.txt").exists(), ".dockerignore'd file was copied");

    let (again, ran) = solve(&env, &def).await;
    assert_eq!((again.executed, ran.len()), (0, 0), "second solve ran {ran:?}");
    assert_eq!(again.root, first.root);

    // A file no COPY selects, and an ignored one: nothing runs.
    env.write("b.txt", "changed\n");
    env.write("sub/ignored.txt", "changed\n");
    let (same, ran) = solve(&env, &def).await;
    assert_eq!((same.executed, ran.len()), (0, 0), "unselected or ignored changes ran {ran:?}");

    // mtime alone is not a change.
    let f = std::fs::File::options().write(true).open(env.context().join("a.txt")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60)).unwrap();
    let (_, ran) = solve(&env, &def).await;
    assert!(ran.is_empty(), "touching a.txt ran {ran:?}");

    // The file a COPY reads: that COPY and what follows, not what precedes.
    env.write("a.txt", "two\n");
    let (changed, ran) = solve(&env, &def).await;
    assert!(ran.iter().any(|n| n.contains("COPY a.txt")), "{ran:?}");
    assert!(ran.iter().any(|n| n.contains("RUN cat /a.txt")), "{ran:?}");
    assert!(ran.iter().any(|n| n.contains("COPY sub/")), "{ran:?}");
    assert!(!ran.iter().any(|n| n.contains("RUN echo base") || n.contains("FROM")), "{ran:?}");
    let out = env.export(&changed.root);
    assert_eq!(std::fs::read_to_string(out.path().join("copy")).unwrap(), "two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_mounting_the_context_reruns_when_the_mounted_part_changes() {
    require_root!();
    let env = Env::new();
    env.write("m/data", "1\n");
    env.write("other", "o\n");
    let def = definition("FROM busybox\nRUN --mount=target=/m,source=m cat /m/data > /seen\n", &[]);
    let (first, _) = solve(&env, &def).await;
    assert_eq!(std::fs::read_to_string(env.export(&first.root).path().join("seen")).unwrap(), "1\n");
    env.write("other", "changed\n");
    let (_, ran) = solve(&env, &def).await;
    assert!(ran.is_empty(), "a change outside the mounted directory ran {ran:?}");
    env.write("m/data", "2\n");
    let (second, ran) = solve(&env, &def).await;
    assert_eq!(ran.iter().filter(|n| n.contains("RUN")).count(), 1, "{ran:?}");
    assert_eq!(std::fs::read_to_string(env.export(&second.root).path().join("seen")).unwrap(), "2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_arg_reruns_only_the_steps_that_see_it_and_no_cache_filter_reruns_its_stage() {
    require_root!();
    let env = Env::new();
    let df = "FROM busybox\nRUN echo before > /before\nARG V\nRUN echo $V > /v\n";
    let with = |v: &str, no_cache: &[&str]| {
        let mut opts = frontend::convert::ConvertOptions::default();
        opts.build_args.insert("V".into(), v.into());
        opts.no_cache = no_cache.iter().map(|s| s.to_string()).collect();
        definition_with(df, &opts)
    };
    solve(&env, &with("1", &[])).await;
    let (two, ran) = solve(&env, &with("2", &[])).await;
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].contains("RUN echo $V"), "{ran:?}");
    assert_eq!(std::fs::read_to_string(env.export(&two.root).path().join("v")).unwrap(), "2\n");
    let (_, ran) = solve(&env, &with("2", &["*"])).await;
    assert!(ran.iter().any(|n| n.contains("RUN echo before")), "--no-cache-filter ignored: {ran:?}");
}
