//! Differ and applier throughput on a tree of ~200 MB in 5k files (RBUILD_BENCH_MB and
//! RBUILD_BENCH_FILES change the shape): `cargo bench -p snapshotter`.

use std::fs;
use std::io;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use snapshotter::apply::apply_layer;
use snapshotter::diff::{write_layer, Compression, DiffOptions};
use snapshotter::snapshot::{ApplyTarget, DiffSource};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Files of mixed sizes with half-compressible content, 50 per directory.
fn make_tree(root: &Path, total_mb: usize, files: usize) -> u64 {
    let per_file = total_mb * (1 << 20) / files;
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut total = 0u64;
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 50));
        fs::create_dir_all(&dir).unwrap();
        let size = per_file / 2 + (i * 7919) % per_file.max(1);
        let data: Vec<u8> = (0..size)
            .map(|j| {
                if j % 2 == 0 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                } else {
                    b'a' + (j % 26) as u8
                }
            })
            .collect();
        fs::write(dir.join(format!("f{i}.bin")), &data).unwrap();
        total += size as u64;
    }
    total
}

fn bench(c: &mut Criterion) {
    let mb = env_num("RBUILD_BENCH_MB", 200);
    let files = env_num("RBUILD_BENCH_FILES", 5000);
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let bytes = make_tree(&tree, mb, files);
    let source = DiffSource::Upper(tree.clone());

    let mut g = c.benchmark_group("differ");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        g.bench_function(format!("{compression:?}"), |b| {
            b.iter(|| write_layer(&source, io::sink(), DiffOptions { compression, source_date_epoch: None }).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("applier");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    for compression in [Compression::None, Compression::Zstd] {
        let opts = DiffOptions { compression, source_date_epoch: None };
        let (_, _, _, layer) = write_layer(&source, Vec::new(), opts).unwrap();
        let mut n = 0;
        g.bench_function(format!("{compression:?}"), |b| {
            b.iter(|| {
                n += 1;
                let dest = dir.path().join(format!("out{n}"));
                fs::create_dir(&dest).unwrap();
                apply_layer(&ApplyTarget::Tree(dest.clone()), &layer[..]).unwrap();
                fs::remove_dir_all(&dest).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
