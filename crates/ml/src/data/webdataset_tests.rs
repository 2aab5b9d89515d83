//! Shards built here with the `tar` crate: grouping by key, captions from txt or json, what is
//! skipped and why, shards cut short, files that are not tars.

use std::path::{Path, PathBuf};

use super::*;

/// A tar of `(member path, bytes)` in order. Paths are written raw, `..` included.
fn tar_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut header = tar::Header::new_gnu();
        let raw = &mut header.as_gnu_mut().expect("gnu header").name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(if name.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn read_all(path: &Path) -> Result<(Vec<Item>, ShardEnd), DataError> {
    let mut items = Vec::new();
    let end = read_shard(path, |item| {
        items.push(item);
        Ok::<_, DataError>(())
    })?;
    Ok((items, end))
}

fn sample(key: &str, ext: &str, image: &[u8], caption: &str) -> Item {
    Item::Sample(Sample {
        key: key.into(),
        image_ext: ext.into(),
        image: image.to_vec(),
        caption: caption.into(),
    })
}

fn reasons(items: &[Item]) -> Vec<(String, Skip)> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Skipped { key, reason, .. } => Some((key.clone(), *reason)),
            Item::Sample(_) => None,
        })
        .collect()
}

#[test]
fn keys_are_paths_up_to_the_first_dot_of_the_file_name() {
    assert_eq!(
        key_and_extension("000123.jpg"),
        Some(("000123".into(), "jpg".into()))
    );
    assert_eq!(
        key_and_extension("./a.b/000123.Seg.PNG"),
        Some(("a.b/000123".into(), "seg.png".into()))
    );
    assert_eq!(key_and_extension("README"), None);
    assert_eq!(key_and_extension("dir/.hidden.txt"), None);
}

#[test]
fn members_group_by_key_and_captions_come_from_txt_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let shard = tar_bytes(&[
        ("000.jpg", b"jpeg-0"),
        ("000.txt", b"  a dog\n"),
        ("000.json", br#"{"caption": "not this one"}"#),
        ("001.PNG", b"png-1"),
        ("001.json", br#"{"caption": "a cat", "width": 3}"#),
        ("002.jpeg", b"jpeg-2"),
        ("002.json", br#"{"txt": "from the txt field"}"#),
        ("sub/", b""),
        ("sub/003.webp", b"webp-3"),
        ("sub/003.txt", b"in a folder"),
        ("./004.jpg", b"jpeg-4"),
        ("./004.txt", b"dot slash"),
        ("README", b"ignored: no extension"),
        ("005.jpg", b"jpeg-5"),
        ("005.txt", b"\xff\xfe"),
        ("005.json", br#"{"caption": "json when txt is unreadable"}"#),
    ]);
    let path = write(dir.path(), "shard.tar", &shard);
    let (items, end) = read_all(&path).unwrap();
    assert_eq!(end, ShardEnd::default());
    assert_eq!(
        items,
        vec![
            sample("000", "jpg", b"jpeg-0", "a dog"),
            sample("001", "png", b"png-1", "a cat"),
            sample("002", "jpeg", b"jpeg-2", "from the txt field"),
            sample("sub/003", "webp", b"webp-3", "in a folder"),
            sample("004", "jpg", b"jpeg-4", "dot slash"),
            sample("005", "jpg", b"jpeg-5", "json when txt is unreadable"),
        ]
    );
}

#[test]
fn samples_without_image_or_caption_are_skipped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let shard = tar_bytes(&[
        ("a.jpg", b"no caption"),
        ("b.txt", b"no image"),
        ("c.seg.png", b"a mask is not the image"),
        ("c.txt", b"caption"),
        ("d.png", b"x"),
        ("d.json", b"{not json"),
        ("e.png", b"x"),
        ("e.json", br#"{"caption": 3}"#),
        ("f.png", b"x"),
        ("f.txt", b"   "),
        ("../g.png", b"x"),
        ("../g.txt", b"climbs out"),
        // Not consecutive: webdataset sees three samples here, and so do we.
        ("h.jpg", b"x"),
        ("i.txt", b"y"),
        ("h.txt", b"z"),
    ]);
    let path = write(dir.path(), "shard.tar", &shard);
    let (items, _) = read_all(&path).unwrap();
    let expected: Vec<(String, Skip)> = [
        ("a", Skip::NoCaption),
        ("b", Skip::NoImage),
        ("c", Skip::NoImage),
        ("d", Skip::NoCaption),
        ("e", Skip::NoCaption),
        ("f", Skip::NoCaption),
        ("../g", Skip::BadName),
        ("h", Skip::NoCaption),
        ("i", Skip::NoImage),
        ("h", Skip::NoImage),
    ]
    .into_iter()
    .map(|(k, r)| (k.to_string(), r))
    .collect();
    assert_eq!(reasons(&items), expected);
    assert!(items.iter().all(|i| matches!(i, Item::Skipped { .. })));
    let Item::Skipped { detail, .. } = &items[3] else {
        unreachable!()
    };
    assert!(detail.contains("not JSON"), "{detail}");
}

#[test]
fn a_shard_cut_inside_its_last_member_keeps_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let image = vec![7u8; 3000];
    let shard = tar_bytes(&[
        ("0.jpg", &image),
        ("0.txt", b"first"),
        ("1.jpg", &image),
        ("1.txt", b"second"),
    ]);
    // 0.jpg: header + 3072, 0.txt: header + 512, 1.jpg: header + 1000 of its 3000 bytes.
    let cut = 512 + 3072 + 512 + 512 + 512 + 1000;
    let path = write(dir.path(), "cut.tar", &shard[..cut]);
    let (items, end) = read_all(&path).unwrap();
    assert_eq!(items[0], sample("0", "jpg", &image, "first"));
    assert_eq!(reasons(&items[1..]), [("1".to_string(), Skip::Truncated)]);
    let why = end.truncated.expect("reported as cut short");
    assert!(why.contains("1.jpg holds 1000 of its 3000 bytes"), "{why}");

    // Cut inside the header after a complete sample: that sample is kept.
    let cut = 512 + 3072 + 512 + 512 + 100;
    let path = write(dir.path(), "cut2.tar", &shard[..cut]);
    let (items, end) = read_all(&path).unwrap();
    assert_eq!(items, vec![sample("0", "jpg", &image, "first")]);
    assert!(end.truncated.is_some());
}

#[test]
fn not_a_tar_and_missing_shards_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "junk.tar", &[b'x'; 1024]);
    let err = read_all(&path).unwrap_err().to_string();
    assert!(
        err.contains("junk.tar") && err.contains("not a readable tar"),
        "{err}"
    );
    let err = read_all(&dir.path().join("gone.tar"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gone.tar"), "{err}");
    // An empty file is an empty shard.
    let path = write(dir.path(), "empty.tar", b"");
    assert_eq!(read_all(&path).unwrap().0, vec![]);
}

#[test]
fn the_visitor_can_stop_the_reading() {
    let dir = tempfile::tempdir().unwrap();
    let shard = tar_bytes(&[
        ("0.jpg", b"x"),
        ("0.txt", b"a"),
        ("1.jpg", b"y"),
        ("1.txt", b"b"),
    ]);
    let path = write(dir.path(), "s.tar", &shard);
    let mut seen = 0;
    let err = read_shard(&path, |_| {
        seen += 1;
        Err(DataError::Invalid("disk full".into()))
    })
    .unwrap_err();
    assert_eq!(seen, 1);
    assert!(err.to_string().contains("disk full"));
}

#[test]
fn gzipped_shards_read_the_same() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let shard = tar_bytes(&[("0.jpg", b"x"), ("0.txt", b"a zipped caption")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&shard).unwrap();
    let path = write(dir.path(), "s.tar.gz", &gz.finish().unwrap());
    let (items, end) = read_all(&path).unwrap();
    assert_eq!(items, vec![sample("0", "jpg", b"x", "a zipped caption")]);
    assert_eq!(end, ShardEnd::default());
    // A .gz that is not gzip is not a readable tar.
    let path = write(dir.path(), "plain.tar.gz", &shard);
    let err = read_all(&path).unwrap_err().to_string();
    assert!(err.contains("plain.tar.gz"), "{err}");
}
