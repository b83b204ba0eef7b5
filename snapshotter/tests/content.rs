//! Content store behaviour: verified commit, mismatch cleanup, concurrency, resumption.

use std::io::{Read, Write};
use std::sync::Arc;

use snapshotter::content::{write_blob, ContentError, ContentWriter, InfoProvider, Ingester, LocalStore, Provider};
use snapshotter::digest;

fn store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path().join("content")).unwrap();
    (dir, s)
}

#[test]
fn commit_then_read_back() {
    let (_d, s) = store();
    let data = b"hello blob".repeat(1000);
    let want = digest::of_bytes(&data);
    let got = write_blob(&s, "r1", &data[..], Some(data.len() as u64), Some(&want)).unwrap();
    assert_eq!(got, want);
    let mut back = Vec::new();
    s.reader(&want).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(s.info(&want).unwrap().size, data.len() as u64);
    assert_eq!(s.list().unwrap().len(), 1);
    assert!(s.ingests().unwrap().is_empty());
    s.delete(&want).unwrap();
    assert!(matches!(s.reader(&want), Err(ContentError::NotFound(_))));
}

#[test]
fn digest_mismatch_names_both_and_leaves_nothing() {
    let (_d, s) = store();
    let wrong = digest::of_bytes(b"something else");
    let actual = digest::of_bytes(b"payload");
    let err = write_blob(&s, "r", &b"payload"[..], None, Some(&wrong)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(wrong.as_ref()) && msg.contains(actual.as_ref()), "{msg}");
    assert!(s.list().unwrap().is_empty());
    assert!(s.ingests().unwrap().is_empty());
    assert!(matches!(s.info(&actual), Err(ContentError::NotFound(_))));
}

#[test]
fn size_mismatch_leaves_nothing() {
    let (_d, s) = store();
    let err = write_blob(&s, "r", &b"payload"[..], Some(3), None).unwrap_err();
    assert!(matches!(err, ContentError::SizeMismatch { expected: 3, actual: 7, .. }), "{err}");
    assert!(s.list().unwrap().is_empty());
    assert!(s.ingests().unwrap().is_empty());
}

#[test]
fn concurrent_writers_of_one_blob() {
    let (_d, s) = store();
    let s = Arc::new(s);
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let want = digest::of_bytes(&data);
    let data = Arc::new(data);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (s, data, want) = (s.clone(), data.clone(), want.clone());
            // Half share one reference (serialised by the ingest lock), half use their own.
            let reference = if i % 2 == 0 { "shared".to_string() } else { format!("own-{i}") };
            std::thread::spawn(move || {
                let mut w = s.writer(&reference, Some(data.len() as u64)).unwrap();
                let start = w.offset() as usize;
                for chunk in data[start..].chunks(100_000) {
                    w.write_all(chunk).unwrap();
                }
                w.commit(Some(data.len() as u64), Some(&want)).unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), want);
    }
    let mut back = Vec::new();
    s.reader(&want).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(&back, &*data);
    assert!(s.ingests().unwrap().is_empty());
}

#[test]
fn abandoned_ingest_resumes() {
    let (_d, s) = store();
    let data = b"0123456789".repeat(10_000);
    let want = digest::of_bytes(&data);
    {
        let mut w = s.writer("pull-layer", Some(data.len() as u64)).unwrap();
        w.write_all(&data[..40_000]).unwrap();
        w.flush().unwrap();
    }
    let mut w = s.writer("pull-layer", Some(data.len() as u64)).unwrap();
    assert_eq!(w.offset(), 40_000);
    w.write_all(&data[40_000..]).unwrap();
    assert_eq!(w.commit(Some(data.len() as u64), Some(&want)).unwrap(), want);
}

#[test]
fn hostile_digest_is_rejected() {
    let (_d, s) = store();
    let d: snapshotter::Digest =
        "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e".parse().unwrap();
    assert!(matches!(s.reader(&d), Err(ContentError::Digest(_))));
}
