//! The remote against a shared folder (`file://`): what the remote holds is listed or asked, packs
//! go up and come back whole, and a damaged or missing pack is named or fetched around.

use std::path::{Path, PathBuf};

use super::*;
use crate::manifest::{Entry, Manifest, Node};

struct Setup {
    _dirs: [tempfile::TempDir; 3],
    remote_dir: PathBuf,
    remote: Remote,
    here: Cas,
    there: Cas,
}

fn setup() -> Setup {
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let remote_dir = dirs[0].path().to_path_buf();
    let remote = Remote::open(&format!("file://{}", remote_dir.display())).unwrap();
    let here = Cas::open(dirs[1].path()).unwrap();
    let there = Cas::open(dirs[2].path()).unwrap();
    Setup {
        _dirs: dirs,
        remote_dir,
        remote,
        here,
        there,
    }
}

/// `n` small objects in `cas` and the manifest that names them (stored too).
fn artifact(cas: &Cas, n: u32) -> (Digest, Manifest) {
    let entries = (0..n)
        .map(|i| {
            let bytes = format!("file {i}\n").repeat(1 + i as usize % 7);
            Entry {
                path: format!("out/f{i}"),
                node: Node::File {
                    digest: cas.put_bytes(bytes.as_bytes()).unwrap(),
                    size: bytes.len() as u64,
                    executable: false,
                },
            }
        })
        .collect();
    let manifest = Manifest::new(entries);
    (cas.put_manifest(&manifest).unwrap(), manifest)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn what_the_remote_lacks_is_the_same_whether_listed_or_asked() {
    let s = setup();
    let (_, manifest) = artifact(&s.here, LIST_OVER as u32 + 44);
    let all: Vec<Digest> = manifest.objects().collect();
    let (sent, kept_back) = all.split_at(200);
    assert_eq!(
        s.remote.upload(&s.here, sent, &|_| {}).unwrap().objects,
        200
    );
    // Over LIST_OVER digests: by listing; a few: one HEAD each.
    assert_eq!(s.remote.missing(&all).unwrap(), kept_back);
    assert_eq!(s.remote.missing(&all[190..210]).unwrap(), &all[200..210]);
}

#[test]
fn packs_go_up_once_and_come_back_checked() {
    let s = setup();
    let (manifest_digest, manifest) = artifact(&s.here, 500);
    let plan = transfer_plan(&manifest);
    assert_eq!(plan.packed.len(), 500);
    assert!(!s.remote.holds_packs(&manifest_digest).unwrap());
    let sent = s
        .remote
        .upload_packs(&s.here, &manifest_digest, &plan.packed, &|_| {})
        .unwrap();
    assert_eq!((sent.objects, sent.packs), (500, 1));
    assert!(s.remote.holds_packs(&manifest_digest).unwrap());
    assert!(
        files_under(&s.remote_dir.join("objects")).is_empty(),
        "no file went up loose"
    );

    let wanted: Vec<Digest> = plan.packed.iter().map(|f| f.0).collect();
    let told = std::sync::Mutex::new(Moved::default());
    let on_moved = |m: Moved| {
        let mut told = told.lock().unwrap();
        *told = *told + m;
    };
    let (got, rest) = s
        .remote
        .download_packed(&s.there, &manifest_digest, &wanted[..300], &on_moved)
        .unwrap();
    assert_eq!((got.objects, got.packs, rest.len()), (300, 1, 0));
    assert_eq!(
        *told.lock().unwrap(),
        got,
        "the progress display is told all"
    );
    for d in &wanted[..300] {
        assert_eq!(
            s.there.read_bytes(d).unwrap(),
            s.here.read_bytes(d).unwrap()
        );
    }
    assert!(!s.there.holds(&wanted[300]).unwrap(), "only what was asked");
}

#[test]
fn an_altered_pack_is_named_and_nothing_of_it_is_kept() {
    let s = setup();
    let (manifest_digest, manifest) = artifact(&s.here, 100);
    let plan = transfer_plan(&manifest);
    s.remote
        .upload_packs(&s.here, &manifest_digest, &plan.packed, &|_| {})
        .unwrap();
    let pack = files_under(&s.remote_dir.join("packs")).pop().unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&pack, bytes).unwrap();

    let wanted: Vec<Digest> = plan.packed.iter().map(|f| f.0).collect();
    let err = s
        .remote
        .download_packed(&s.there, &manifest_digest, &wanted, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("came back with other content: not kept"),
        "{err}"
    );
    assert!(wanted.iter().all(|d| !s.there.holds(d).unwrap()));
}

#[test]
fn files_of_a_missing_pack_or_index_are_left_to_fetch_loose() {
    let s = setup();
    let (manifest_digest, manifest) = artifact(&s.here, 100);
    let plan = transfer_plan(&manifest);
    let wanted: Vec<Digest> = plan.packed.iter().map(|f| f.0).collect();
    // No index: a push by an older vlmflow, every file loose.
    s.remote.upload(&s.here, &wanted, &|_| {}).unwrap();
    let (got, rest) = s
        .remote
        .download_packed(&s.there, &manifest_digest, &wanted, &|_| {})
        .unwrap();
    assert_eq!((got.objects, &rest), (0, &wanted));

    s.remote
        .upload_packs(&s.here, &manifest_digest, &plan.packed, &|_| {})
        .unwrap();
    for pack in files_under(&s.remote_dir.join("packs")) {
        std::fs::remove_file(pack).unwrap();
    }
    let (got, rest) = s
        .remote
        .download_packed(&s.there, &manifest_digest, &wanted, &|_| {})
        .unwrap();
    assert_eq!((got.objects, &rest), (0, &wanted));
    assert_eq!(
        s.remote.download(&s.there, &rest, &|_| {}).unwrap().objects,
        100
    );
}
