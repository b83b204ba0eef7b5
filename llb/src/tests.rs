//! Graph-level tests: golden digests, dedup, validation, JSON, cache identity, dot.

use expect_test::expect;

use crate::file::{Copy, Mkfile, Rm};
use crate::*;

fn platform() -> Platform {
    "linux/amd64".parse().unwrap()
}

struct Dag {
    builder: DefinitionBuilder,
    image: Output,
    context: Output,
    copy: Output,
    run: Output,
}

/// `FROM alpine; COPY . /src; RUN --mount=type=cache,target=/root/.cache make` as the frontend would
/// build it, plus a heredoc file and an rm.
fn small_dag() -> Dag {
    let mut b = DefinitionBuilder::new();
    let reference = normalize_reference("alpine:3.20").unwrap();
    let image = b
        .source(
            SourceOp::image(reference, Some(platform())),
            Some(platform()),
            Metadata::described("[internal] load alpine"),
        )
        .unwrap();
    let mut local = SourceOp::local("context");
    if let SourceOp::Local { exclude_patterns, shared_key_hint, .. } = &mut local {
        exclude_patterns.push(".git".into());
        *shared_key_hint = Some("context".into());
    }
    let context = b.source(local, None, Metadata::described("[internal] load build context")).unwrap();
    let copy_op = FileOp {
        actions: vec![
            FileAction {
                input: Some(0),
                secondary_input: Some(1),
                output: None,
                action: FileActionKind::Copy(Copy {
                    src: "/".into(),
                    dest: "/src".into(),
                    dir_copy_contents: true,
                    create_dest_path: true,
                    allow_wildcard: true,
                    owner: Some(ChownOpt { user: Some(UserOpt::ById(1000)), group: None }),
                    ..Copy::default()
                }),
            },
            FileAction {
                input: Some(2),
                secondary_input: None,
                output: None,
                action: FileActionKind::Mkfile(Mkfile {
                    path: "/src/build.sh".into(),
                    mode: 0o755,
                    data: Bytes::from("#!/bin/sh\nmake\n"),
                    owner: None,
                    timestamp: Some(0),
                }),
            },
            FileAction {
                input: Some(3),
                secondary_input: None,
                output: Some(0),
                action: FileActionKind::Rm(Rm {
                    path: "/src/.env".into(),
                    allow_not_found: true,
                    allow_wildcard: false,
                }),
            },
        ],
    };
    let copy = b
        .add_op(Op::File(copy_op), &[image, context], Some(platform()), Metadata::described("[build 1/2] COPY . /src"))
        .unwrap();
    let mut exec = ExecOp::new(vec!["/bin/sh".into(), "-c".into(), "make".into()], Some(0));
    exec.meta.env = vec!["PATH=/usr/bin:/bin".into()];
    exec.meta.cwd = "/src".into();
    exec.meta.proxy_env = Some(ProxyEnv { http_proxy: Some("http://proxy:3128".into()), ..ProxyEnv::default() });
    exec.mounts.push(Mount {
        kind: MountKind::Cache { id: "/root/.cache".into(), sharing: CacheSharing::Locked },
        ..Mount::bind(None, "/root/.cache", None)
    });
    exec.mounts.push(Mount {
        kind: MountKind::Secret(SecretOpt { id: "token".into(), uid: 0, gid: 0, mode: 0o400, optional: false }),
        readonly: true,
        ..Mount::bind(None, "/run/secrets/token", None)
    });
    let run = b
        .add_op(
            Op::Exec(exec),
            &[copy],
            Some(platform()),
            Metadata::described("[build 2/2] RUN make").at("Dockerfile", 3, 3),
        )
        .unwrap();
    Dag { builder: b, image, context, copy, run }
}

#[test]
fn golden_digests() {
    let dag = small_dag();
    let digests = [dag.image, dag.context, dag.copy, dag.run].map(|o| o.digest.to_string()).join("\n");
    expect![[r#"
        sha256:122c404b42a942399c8f0bb8a9e4468d032e39c395af4223d767e0a4bb399725
        sha256:c2412672ba3a4b57ccb523a6654b64c7adff5e9894b3cd0580b7df62db2d83d9
        sha256:e12a418c3f4a9b4d2820fd61aeaad504063e97fdd2512dd34ef47472ad35ff10
        sha256:17998b2547cfca1644f82d0cbe7f3a3c5eb4a8f0c64e1f306d187d82fdaebe1b"#]]
    .assert_eq(&digests);
    let run = dag.builder.vertex(&dag.run.digest).unwrap();
    expect![[r#"{"op":{"exec":{"meta":{"args":["/bin/sh","-c","make"],"env":["PATH=/usr/bin:/bin"],"cwd":"/src","proxy_env":{"http_proxy":"http://proxy:3128"}},"mounts":[{"input":0,"dest":"/","output":0},{"dest":"/root/.cache","kind":{"type":"cache","id":"/root/.cache","sharing":"locked"}},{"dest":"/run/secrets/token","readonly":true,"kind":{"type":"secret","id":"token","mode":256}}]}},"inputs":[{"digest":"sha256:e12a418c3f4a9b4d2820fd61aeaad504063e97fdd2512dd34ef47472ad35ff10"}],"platform":{"os":"linux","architecture":"amd64"}}"#]]
    .assert_eq(&String::from_utf8(run.canonical_bytes()).unwrap());
}

#[test]
fn digest_covers_inputs() {
    let dag = small_dag();
    let run = dag.builder.vertex(&dag.run.digest).unwrap().clone();
    let mut other = run.clone();
    other.inputs[0].digest = dag.image.digest;
    assert_ne!(run.digest(), other.digest());
    let mut platformless = run.clone();
    platformless.platform = None;
    assert_ne!(run.digest(), platformless.digest());
}

#[test]
fn identical_vertices_are_deduplicated_and_metadata_merged() {
    let mut dag = small_dag();
    let before = dag.builder.len();
    let mut meta = Metadata::described("[other 1/1] FROM alpine");
    meta.ignore_cache = true;
    let again = dag
        .builder
        .source(
            SourceOp::image(normalize_reference("docker.io/library/alpine:3.20").unwrap(), Some(platform())),
            Some(platform()),
            meta,
        )
        .unwrap();
    assert_eq!(again, dag.image);
    assert_eq!(dag.builder.len(), before);
    let def = dag.builder.finish(Some(dag.run)).unwrap();
    let m = def.metadata_of(&dag.image.digest).unwrap();
    assert_eq!(m.description.as_deref(), Some("[internal] load alpine"));
    assert!(m.ignore_cache);
}

#[test]
fn finish_keeps_only_what_the_root_needs() {
    let mut dag = small_dag();
    let unused = dag.builder.source(SourceOp::local("unused"), None, Metadata::described("unused")).unwrap();
    let def = dag.builder.finish(Some(dag.copy)).unwrap();
    assert_eq!(def.vertices.len(), 3);
    assert!(!def.vertices.contains_key(&unused.digest));
    assert!(!def.metadata.contains_key(&unused.digest));
    assert_eq!(def.reachable_from(&dag.copy.digest).len(), 3);
    assert_eq!(def.reachable_from(&dag.context.digest).len(), 1);
    let order = def.topological_order().unwrap();
    assert_eq!(order.last(), Some(&dag.copy.digest));
}

#[test]
fn json_round_trip_keeps_digests() {
    let dag = small_dag();
    let def = dag.builder.finish(Some(dag.run)).unwrap();
    let json = def.to_json();
    let back = Definition::from_json(&json).unwrap();
    assert_eq!(back, def);
    assert_eq!(back.to_json(), json);
    for (key, v) in &back.vertices {
        assert_eq!(v.digest(), *key);
    }
}

#[test]
fn from_json_rejects_a_tampered_vertex() {
    let dag = small_dag();
    let def = dag.builder.finish(Some(dag.run)).unwrap();
    let json = def.to_json().replace("\"make\"", "\"make install\"");
    let err = Definition::from_json(&json).unwrap_err();
    assert!(matches!(err, DefinitionError::DigestMismatch { key, .. } if key == dag.run.digest), "{err}");
    assert!(matches!(Definition::from_json("{"), Err(DefinitionError::Json(_))));
}

#[test]
fn cache_identity_blanks_non_identity_fields() {
    let dag = small_dag();
    let run = dag.builder.vertex(&dag.run.digest).unwrap();
    let id = run.cache_identity();
    let Op::Exec(e) = &id.op else { panic!("not an exec") };
    assert_eq!(e.meta.proxy_env, None);
    assert_eq!(e.meta.args, ["/bin/sh", "-c", "make"]);
    assert_ne!(id.digest(), run.digest());
    let mut other_proxy = run.clone();
    let Op::Exec(e) = &mut other_proxy.op else { panic!("not an exec") };
    e.meta.proxy_env = None;
    assert_eq!(other_proxy.cache_identity().digest(), id.digest());
    let ctx = dag.builder.vertex(&dag.context.digest).unwrap().cache_identity();
    let Op::Source(SourceOp::Local { shared_key_hint, exclude_patterns, .. }) = &ctx.op else { panic!("not local") };
    assert_eq!(*shared_key_hint, None);
    assert_eq!(exclude_patterns, &[".git"]);
}

fn vertex_error(v: Vertex) -> OpProblem {
    match DefinitionBuilder::new().add(v, Metadata::default()) {
        Err(DefinitionError::InvalidOp { problem, .. }) => problem,
        other => panic!("expected an invalid op, got {other:?}"),
    }
}

#[test]
fn validate_reports_bad_ops() {
    let exec = |mounts: Vec<Mount>| {
        Vertex::new(Op::Exec(ExecOp { mounts, ..ExecOp::new(vec!["true".into()], None) }), vec![], None)
    };
    assert_eq!(vertex_error(exec(vec![])), OpProblem::NoMounts);
    let relative = Mount::bind(None, "cache", None);
    assert_eq!(
        vertex_error(exec(vec![Mount::rootfs(None), relative])),
        OpProblem::RelativeMountDest { mount: 1, dest: "cache".into() }
    );
    let source = |s| Vertex::new(Op::Source(s), vec![], None);
    assert_eq!(
        vertex_error(source(SourceOp::image("alpine", None))),
        OpProblem::UnnormalizedReference("alpine".into(), "docker.io/library/alpine:latest".into())
    );
    assert!(matches!(vertex_error(source(SourceOp::image("A:", None))), OpProblem::BadReference(..)));
    assert_eq!(
        vertex_error(exec(vec![Mount::rootfs(Some(0))])),
        OpProblem::MountInput { mount: 0, input: 0, inputs: 0 }
    );
    let tmpfs = Mount { kind: MountKind::Tmpfs { size: None }, ..Mount::bind(None, "/tmp", Some(1)) };
    assert_eq!(vertex_error(exec(vec![Mount::rootfs(None), tmpfs])), OpProblem::MountOutputNotAllowed { mount: 1 });
    let gap = Mount::bind(None, "/out", Some(2));
    assert_eq!(vertex_error(exec(vec![Mount::rootfs(None), gap])), OpProblem::OutputGap(1));
    let rm = |input| FileAction {
        input,
        secondary_input: None,
        output: Some(0),
        action: FileActionKind::Rm(Rm { path: "/x".into(), allow_not_found: false, allow_wildcard: false }),
    };
    let file = |actions| Vertex::new(Op::File(FileOp { actions }), vec![], None);
    assert_eq!(
        vertex_error(file(vec![rm(Some(0))])),
        OpProblem::ActionIndex { action: 0, field: "input", index: 0, limit: 0 }
    );
    assert_eq!(vertex_error(file(vec![])), OpProblem::NoActions);
    assert_eq!(vertex_error(Vertex::new(Op::Merge(MergeOp {}), vec![], None)), OpProblem::EmptyMerge);
    let diff = DiffOp { lower: None, upper: Some(1) };
    assert_eq!(
        vertex_error(Vertex::new(Op::Diff(diff), vec![], None)),
        OpProblem::DiffIndex { field: "upper", index: 1, inputs: 0 }
    );
}

#[test]
fn validate_reports_graph_errors_naming_the_digest() {
    let dag = small_dag();
    let mut def = dag.builder.finish(Some(dag.run)).unwrap();
    let mut broken = def.clone();
    broken.vertices.remove(&dag.copy.digest);
    broken.metadata.remove(&dag.copy.digest);
    let err = broken.validate().unwrap_err();
    assert_eq!(err, DefinitionError::MissingInput { vertex: dag.run.digest, input: dag.copy.digest });
    assert!(err.to_string().contains(&dag.run.digest.to_string()));

    let mut bad_root = def.clone();
    bad_root.root = Some(dag.run.with_index(1));
    assert!(matches!(bad_root.validate(), Err(DefinitionError::RootOutputOutOfRange { index: 1, available: 1, .. })));
    bad_root.root = Some(Output::new(Digest::of(b"nothing"), 0));
    assert!(matches!(bad_root.validate(), Err(DefinitionError::MissingRoot(_))));

    def.metadata.insert(Digest::of(b"nothing"), Metadata::described("orphan"));
    assert!(matches!(def.validate(), Err(DefinitionError::OrphanMetadata(_))));

    let mut b = DefinitionBuilder::new();
    let missing = Vertex::new(Op::Merge(MergeOp {}), vec![Output::new(Digest::of(b"x"), 0).into()], None);
    assert!(matches!(b.add(missing, Metadata::default()), Err(DefinitionError::MissingInput { .. })));
}

#[test]
fn topological_order_detects_cycles() {
    // Content addressing makes cycles impossible for honest keys; a hand-edited map can still have one.
    let a_key = Digest::of(b"a");
    let b_key = Digest::of(b"b");
    let merge = |input: Digest| Vertex::new(Op::Merge(MergeOp {}), vec![Output::new(input, 0).into()], None);
    let mut def = Definition::default();
    def.vertices.insert(a_key, merge(b_key));
    def.vertices.insert(b_key, merge(a_key));
    assert!(matches!(def.topological_order(), Err(DefinitionError::Cycle(_))));
}

#[test]
fn merge_and_diff_take_inputs_in_order() {
    let dag = small_dag();
    let mut b = dag.builder;
    let merged = b.add_op(Op::Merge(MergeOp {}), &[dag.image, dag.copy], None, Metadata::default()).unwrap();
    let swapped = b.add_op(Op::Merge(MergeOp {}), &[dag.copy, dag.image], None, Metadata::default()).unwrap();
    assert_ne!(merged, swapped);
    let diff = DiffOp { lower: Some(0), upper: Some(1) };
    let d = b.add_op(Op::Diff(diff), &[dag.image, dag.copy], None, Metadata::described("diff")).unwrap();
    let def = b.finish(Some(d)).unwrap();
    assert_eq!(def.vertices.len(), 4);
}

#[test]
fn dot_rendering() {
    let dag = small_dag();
    let def = dag.builder.finish(Some(dag.copy)).unwrap();
    expect![[r#"
        digraph llb {
          rankdir=TB;
          node [shape=box, fontname=monospace];
          "122c404b42a9" [label="122c404b42a9\n[internal] load alpine"];
          "c2412672ba3a" [label="c2412672ba3a\n[internal] load build context"];
          "e12a418c3f4a" [label="e12a418c3f4a\n[build 1/2] COPY . /src", style=bold];
          "122c404b42a9" -> "e12a418c3f4a";
          "c2412672ba3a" -> "e12a418c3f4a";
        }
    "#]]
    .assert_eq(&def.to_dot());
}
