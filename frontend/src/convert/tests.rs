//! Conversion behaviours checked against BuildKit v0.24 (testdata/parity holds the images it built):
//! variables in RUN --mount values, ARG values a derived stage inherits, RUN history arguments, WORKDIR
//! and EXPOSE as written in the config and history, ADD --checksum of a URL in a variable.

use llb::{ExecOp, MountKind, Op};

use super::{convert, ConvertOptions, Converted, OfflineResolver};

fn conv(dockerfile: &str) -> Converted {
    convert(dockerfile.as_bytes(), &ConvertOptions::default(), &OfflineResolver)
        .unwrap_or_else(|e| panic!("{dockerfile}\n{}", e.message))
}

/// The exec ops whose command line contains `marker`.
fn exec_with<'a>(c: &'a Converted, marker: &str) -> &'a ExecOp {
    let found: Vec<&ExecOp> = c
        .definition
        .vertices
        .values()
        .filter_map(|v| match &v.op {
            Op::Exec(e) if e.meta.args.iter().any(|a| a.contains(marker)) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "one RUN with {marker:?}");
    found[0]
}

fn history(c: &Converted) -> Vec<String> {
    c.image.history.iter().map(|h| h.created_by.clone().unwrap_or_default()).collect()
}

#[test]
fn mount_values_expand_stage_variables() {
    let c = conv(
        "FROM busybox\nARG CACHE_DIR=/cache\nARG OWNER=7\nENV SRC=dir DST=/mnt/src\n\
         RUN --mount=type=cache,target=$CACHE_DIR,id=${CACHE_DIR}-id,uid=$OWNER,mode=0750 \
         --mount=type=bind,source=$SRC,target=${DST} true marker\n",
    );
    let e = exec_with(&c, "marker");
    let cache = e.mounts.iter().find(|m| m.dest == "/cache").expect("the cache mount at $CACHE_DIR");
    assert!(matches!(&cache.kind, MountKind::Cache { id, .. } if id == "/cache-id"), "{:?}", cache.kind);
    assert!(cache.input.is_some(), "uid/mode seed the cache from a directory made for it");
    let bind = e.mounts.iter().find(|m| m.dest == "/mnt/src").expect("the bind mount at ${DST}");
    assert_eq!(bind.selector, "dir");
}

#[test]
fn mount_from_cannot_use_variables() {
    let e = convert(
        b"FROM busybox\nARG S=x\nRUN --mount=from=$S,target=/x true\n",
        &ConvertOptions::default(),
        &OfflineResolver,
    )
    .unwrap_err();
    assert!(e.message.contains("'from' doesn't support variable expansion"), "{}", e.message);
}

#[test]
fn a_derived_stage_inherits_arg_values() {
    let c = conv(
        "FROM busybox AS one\nARG LOCAL=local\nARG GLOBAL=stage\nENV E=env\n\
         FROM one\nRUN echo \"$LOCAL $GLOBAL $E\" marker\n",
    );
    let e = exec_with(&c, "marker");
    for want in ["LOCAL=local", "GLOBAL=stage", "E=env"] {
        assert!(e.meta.env.iter().any(|v| v == want), "{want} in {:?}", e.meta.env);
    }
    // The args are the derived stage's build args too: RUN's history names them.
    let h = history(&c);
    assert!(h.last().unwrap().starts_with("RUN |2 LOCAL=local GLOBAL=stage /bin/sh -c"), "{h:?}");
    // The image config's Env still has only ENV.
    assert_eq!(c.image.config.env.as_deref().unwrap_or_default().iter().filter(|v| v.starts_with("LOCAL=")).count(), 0);
}

#[test]
fn a_redeclared_arg_is_listed_once_in_run_history() {
    let c = conv("FROM busybox\nARG A=1\nARG B\nARG A=2\nRUN true marker\n");
    assert_eq!(history(&c).last().unwrap(), "RUN |2 A=2 B= /bin/sh -c true marker # buildkit");
}

#[test]
fn absolute_workdir_is_kept_as_written() {
    let c = conv("FROM busybox\nWORKDIR /a/../b/\nRUN true marker\nWORKDIR c/./d\n");
    assert_eq!(exec_with(&c, "marker").meta.cwd, "/b");
    assert_eq!(c.image.config.working_dir.as_deref(), Some("/b/c/d"));
    let h = history(&c);
    assert!(h.contains(&"WORKDIR /a/../b/".to_string()), "{h:?}");
    let mkdirs: Vec<String> = c
        .definition
        .vertices
        .values()
        .flat_map(|v| match &v.op {
            Op::File(f) => f
                .actions
                .iter()
                .filter_map(|a| match &a.action {
                    llb::FileActionKind::Mkdir(m) => Some(m.path.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(mkdirs.contains(&"/b".to_string()), "{mkdirs:?}");
}

#[test]
fn expose_history_lists_ports_in_word_order() {
    // The words are sorted as strings when the instruction is parsed (BuildKit's parseExpose), then
    // ranges expand in place.
    let c = conv("FROM busybox\nEXPOSE 9090 8080/udp 80-81\n");
    assert_eq!(history(&c).last().unwrap(), "EXPOSE [80/tcp 81/tcp 8080/udp 9090/tcp]");
}

#[test]
fn add_checksum_accepts_a_url_in_a_variable() {
    let c = conv(
        "FROM busybox\nARG URL=https://example.com/f.txt\n\
         ADD --checksum=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a $URL /f\n",
    );
    assert!(history(&c).last().unwrap().starts_with("ADD https://example.com/f.txt /f"));
}

#[test]
fn run_settings_reach_every_exec_op() {
    let opts = ConvertOptions {
        ulimits: vec![llb::Ulimit { name: "nofile".into(), soft: 512, hard: 512 }],
        shm_size: Some(128 << 20),
        cgroup_parent: Some("builds".into()),
        ..ConvertOptions::default()
    };
    let c = convert(b"FROM busybox\nRUN true marker\n", &opts, &OfflineResolver).unwrap();
    let e = exec_with(&c, "marker");
    assert_eq!(e.meta.ulimits, opts.ulimits);
    assert_eq!(e.meta.cgroup_parent.as_deref(), Some("builds"));
    let shm = e.mounts.iter().find(|m| m.dest == "/dev/shm").expect("a tmpfs at /dev/shm");
    assert_eq!(shm.kind, MountKind::Tmpfs { size: Some(128 << 20) });
    // None of them by default: the op (and its cache key) is what it was.
    let plain = conv("FROM busybox\nRUN true marker\n");
    let e = exec_with(&plain, "marker");
    assert!(e.meta.ulimits.is_empty() && e.meta.cgroup_parent.is_none());
    assert!(!e.mounts.iter().any(|m| m.dest == "/dev/shm"));
}
