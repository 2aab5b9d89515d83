use super::*;

fn file(path: &str, content: &[u8], executable: bool) -> Entry {
    Entry {
        path: path.into(),
        node: Node::File {
            digest: Digest::of_bytes(content),
            size: content.len() as u64,
            executable,
        },
    }
}
fn dir(path: &str) -> Entry {
    Entry {
        path: path.into(),
        node: Node::Dir,
    }
}
fn link(path: &str, target: &str) -> Entry {
    Entry {
        path: path.into(),
        node: Node::Symlink {
            target: target.into(),
        },
    }
}

fn sample() -> Vec<Entry> {
    vec![
        dir("data"),
        file("data/a.txt", b"a", false),
        dir("data/sub"),
        file("data/sub/run.sh", b"#!/bin/sh\n", true),
        link("data/latest", "sub/run.sh"),
        file("data.csv", b"x,y\n", false),
        file("data/we\tird\nna\\me ünï", b"w", false),
        link("data/l\\nk", "tab\there"),
        file("/abs/file", b"", false),
    ]
}

#[test]
fn round_trip_and_canonical_digest() {
    let m = Manifest::new(sample());
    let bytes = m.to_bytes();
    let back = Manifest::from_bytes(&bytes).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.to_bytes(), bytes);

    let mut reversed = sample();
    reversed.reverse();
    assert_eq!(Manifest::new(reversed).digest(), m.digest());
    assert_eq!(m.digest(), Digest::of_bytes(&bytes));

    let mut other = sample();
    other[1] = file("data/a.txt", b"b", false);
    assert_ne!(Manifest::new(other).digest(), m.digest());
    let mut exec = sample();
    exec[1] = file("data/a.txt", b"a", true);
    assert_ne!(Manifest::new(exec).digest(), m.digest());

    assert_eq!(
        Manifest::from_bytes(&Manifest::default().to_bytes()).unwrap(),
        Manifest::default()
    );
}

#[test]
fn rejects_corrupt_bytes() {
    let good = String::from_utf8(Manifest::new(sample()).to_bytes()).unwrap();
    let unsorted = good.replacen("d\tdata\n", "", 1) + "d\tdata\n";
    for bad in [
        "",
        "vlmflow-manifest 2\n",
        "vlmflow-manifest 1\nq\tx\n",
        "vlmflow-manifest 1\nd\t\n",
        "vlmflow-manifest 1\nd\tx",
        "vlmflow-manifest 1\nd\ta\nd\ta\n",
        "vlmflow-manifest 1\nf\tabc\t1\tx\n",
        "vlmflow-manifest 1\nd\ta\\q\n",
        &unsorted,
    ] {
        assert!(
            Manifest::from_bytes(bad.as_bytes()).is_err(),
            "accepted {bad:?}"
        );
    }
    let h = "0".repeat(64);
    assert!(
        Manifest::from_bytes(format!("vlmflow-manifest 1\nf\t{h}\t01\tx\n").as_bytes()).is_err()
    );
    assert!(Manifest::from_bytes(format!("vlmflow-manifest 1\nf\t{h}\t1\tx\n").as_bytes()).is_ok());
}

#[test]
fn counts_objects_under() {
    let m = Manifest::new(sample());
    assert_eq!(m.file_count(), 5);
    assert_eq!(m.total_size(), 1 + 10 + 4 + 1);
    assert_eq!(m.objects().count(), 5);
    let under: Vec<_> = m
        .under("data/")
        .entries()
        .iter()
        .map(|e| e.path.clone())
        .collect();
    assert_eq!(
        under,
        [
            "data",
            "data/a.txt",
            "data/l\\nk",
            "data/latest",
            "data/sub",
            "data/sub/run.sh",
            "data/we\tird\nna\\me ünï"
        ]
    );
    assert_eq!(m.under("data/sub").len(), 2);
    assert_eq!(m.under("./data//sub/"), m.under("data/sub"));
    assert_eq!(m.under("."), m);
    assert_eq!(m.under("data.csv").len(), 1);
    assert!(m.under("dat").is_empty());
    assert_eq!(m.under("/abs").len(), 1);
    assert!(matches!(m.get("data/sub"), Some(Node::Dir)));
    assert!(m.get("data/nope").is_none());
}

#[test]
fn changes_are_sorted_and_typed() {
    let old = Manifest::new(vec![
        dir("d"),
        file("d/a", b"1", false),
        file("d/b", b"2", false),
        file("d/c", b"3", false),
        link("d/l", "a"),
    ]);
    let new = Manifest::new(vec![
        dir("d"),
        file("d/a", b"1", false),
        file("d/b", b"2", true),
        file("d/d", b"4", false),
        link("d/l", "b"),
    ]);
    let ch = old.changes(&new);
    let got: Vec<String> = ch.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        got,
        ["d/b changed", "d/c removed", "d/d added", "d/l changed"]
    );
    assert!(new.changes(&new).is_empty());
    assert_eq!(Manifest::default().changes(&new).len(), new.len());
}

#[test]
fn normalizes_paths() {
    assert_eq!(normalize_path("data/raw/").unwrap(), "data/raw");
    assert_eq!(normalize_path("./data//raw/.").unwrap(), "data/raw");
    assert_eq!(normalize_path("/mnt//x/").unwrap(), "/mnt/x");
    assert_eq!(normalize_path("../x").unwrap(), "../x");
    for bad in ["", ".", "./", "/", "//."] {
        assert!(normalize_path(bad).is_err());
    }
}
