//! Tiny CIFAR-format folders and archives written here: records, planes, label sets, subsets,
//! and the errors for files cut short, labels without a name and missing files.

use std::io::Write;
use std::path::Path;

use super::*;

/// A record: label bytes, then each plane filled from `pixel(plane, i)`.
fn record(labels: &[u8], pixel: impl Fn(usize, usize) -> u8) -> Vec<u8> {
    let mut out = labels.to_vec();
    for plane in 0..3 {
        out.extend((0..1024).map(|i| pixel(plane, i)));
    }
    out
}

/// A record whose three planes are the solid colour `rgb`.
fn solid(labels: &[u8], rgb: [u8; 3]) -> Vec<u8> {
    record(labels, |plane, _| rgb[plane])
}

/// `name → bytes` files of a CIFAR-10 folder: two classes, one image per training batch (label
/// = batch number % 2), three test images.
fn cifar10_files() -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(
        "batches.meta.txt".to_string(),
        b"airplane\nautomobile\n\n".to_vec(),
    )];
    for b in 1..=5u8 {
        files.push((format!("data_batch_{b}.bin"), solid(&[b % 2], [b, 0, 0])));
    }
    let test: Vec<u8> = [0u8, 1, 1]
        .iter()
        .enumerate()
        .flat_map(|(i, l)| solid(&[*l], [0, i as u8, 0]))
        .collect();
    files.push(("test_batch.bin".into(), test));
    files
}

fn write_folder(dir: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// What `read` saw: (batch, index, split, label, first pixel) and the classes.
type Seen = (Vec<(usize, u64, Split, usize, [u8; 3])>, Vec<String>);

fn read_all(
    path: &Path,
    variant: Variant,
    labels: Labels,
    subset: Subset,
) -> Result<Seen, DataError> {
    let mut seen = Vec::new();
    let classes = read(path, variant, labels, subset, |image| {
        let p = image.pixels;
        seen.push((
            image.batch,
            image.index,
            image.split,
            image.label,
            [p[0], p[1024], p[2048]],
        ));
        Ok::<_, DataError>(())
    })?;
    Ok((seen, classes))
}

#[test]
fn a_cifar10_folder_reads_by_subset_with_classes_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &cifar10_files());
    let (seen, classes) =
        read_all(dir.path(), Variant::Cifar10, Labels::Fine, Subset::Test).unwrap();
    assert_eq!(classes, ["airplane", "automobile"]);
    assert_eq!(
        seen,
        vec![
            (0, 0, Split::Validation, 0, [0, 0, 0]),
            (0, 1, Split::Validation, 1, [0, 1, 0]),
            (0, 2, Split::Validation, 1, [0, 2, 0]),
        ]
    );
    let (seen, _) = read_all(dir.path(), Variant::Cifar10, Labels::Fine, Subset::All).unwrap();
    assert_eq!(seen.len(), 8);
    assert_eq!(seen[0], (0, 0, Split::Train, 1, [1, 0, 0]));
    assert_eq!(seen[4], (4, 0, Split::Train, 1, [5, 0, 0]));
    assert_eq!(seen[5].0, 5, "the test batch comes last");
    assert_eq!(seen[5].2, Split::Validation);
    let (seen, _) = read_all(dir.path(), Variant::Cifar10, Labels::Fine, Subset::Train).unwrap();
    assert!(seen.iter().all(|s| s.2 == Split::Train) && seen.len() == 5);
}

#[test]
fn cifar100_reads_the_fine_or_the_coarse_label_and_spaces_underscores() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        (
            "fine_label_names.txt".to_string(),
            b"apple\naquarium_fish\nbaby\n".to_vec(),
        ),
        (
            "coarse_label_names.txt".to_string(),
            b"aquatic_mammals\nfish\n".to_vec(),
        ),
        (
            "train.bin".to_string(),
            [solid(&[1, 2], [9, 9, 9]), solid(&[0, 1], [8, 8, 8])].concat(),
        ),
        ("test.bin".to_string(), solid(&[1, 0], [7, 7, 7])),
    ];
    write_folder(dir.path(), &files);
    let (seen, classes) =
        read_all(dir.path(), Variant::Cifar100, Labels::Fine, Subset::All).unwrap();
    assert_eq!(classes, ["apple", "aquarium fish", "baby"]);
    let labels: Vec<usize> = seen.iter().map(|s| s.3).collect();
    assert_eq!(labels, [2, 1, 0]);
    assert_eq!(seen[0].4, [9, 9, 9], "pixels start after both label bytes");
    let (seen, classes) =
        read_all(dir.path(), Variant::Cifar100, Labels::Coarse, Subset::All).unwrap();
    assert_eq!(classes, ["aquatic mammals", "fish"]);
    assert_eq!(seen.iter().map(|s| s.3).collect::<Vec<_>>(), [1, 0, 1]);
}

#[test]
fn planes_become_rgb_pixels_row_by_row() {
    let bytes = record(&[], |plane, i| match plane {
        0 => (i % 32) as u8, // red: x
        1 => (i / 32) as u8, // green: y
        _ => 200,
    });
    let image = to_image(&bytes);
    assert_eq!(image.dimensions(), (32, 32));
    assert_eq!(image.get_pixel(5, 7).0, [5, 7, 200]);
    assert_eq!(image.get_pixel(31, 0).0, [31, 0, 200]);
}

#[test]
fn an_archive_reads_the_same_as_the_folder_whatever_the_member_order() {
    let dir = tempfile::tempdir().unwrap();
    let files = cifar10_files();
    let folder = dir.path().join("cifar-10-batches-bin");
    write_folder(&folder, &files);

    let mut builder = tar::Builder::new(Vec::new());
    // Class names last, batches reversed, an unrelated file in between.
    let mut members: Vec<&(String, Vec<u8>)> = files.iter().rev().collect();
    let extra = ("readme.html".to_string(), b"<html/>".to_vec());
    members.insert(2, &extra);
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(
                &mut header,
                format!("cifar-10-batches-bin/{name}"),
                bytes.as_slice(),
            )
            .unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&builder.into_inner().unwrap()).unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&archive, gz.finish().unwrap()).unwrap();

    let mut from_folder = read_all(&folder, Variant::Cifar10, Labels::Fine, Subset::All).unwrap();
    let mut from_archive = read_all(&archive, Variant::Cifar10, Labels::Fine, Subset::All).unwrap();
    from_folder.0.sort_by_key(|s| (s.0, s.1));
    from_archive.0.sort_by_key(|s| (s.0, s.1));
    assert_eq!(from_archive, from_folder);

    let err = read_all(&archive, Variant::Cifar100, Labels::Fine, Subset::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cifar-10-binary.tar.gz") && err.contains("fine_label_names.txt"),
        "{err}"
    );
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = cifar10_files();
    write_folder(dir.path(), &files);
    let read_test = || {
        read_all(dir.path(), Variant::Cifar10, Labels::Fine, Subset::Test)
            .unwrap_err()
            .to_string()
    };

    // Cut short by one byte.
    let test = files.iter_mut().find(|f| f.0 == "test_batch.bin").unwrap();
    std::fs::write(
        dir.path().join("test_batch.bin"),
        &test.1[..test.1.len() - 1],
    )
    .unwrap();
    let err = read_test();
    assert!(
        err.contains("test_batch.bin: is 9218 bytes, not a whole number of 3073-byte"),
        "{err}"
    );

    // A label with no class name.
    test.1[3073] = 7;
    std::fs::write(dir.path().join("test_batch.bin"), &test.1).unwrap();
    let err = read_test();
    assert!(
        err.contains("test_batch.bin: record 1 has label 7, but batches.meta.txt names 2 classes"),
        "{err}"
    );

    std::fs::remove_file(dir.path().join("test_batch.bin")).unwrap();
    let err = read_test();
    assert!(err.contains("has no test_batch.bin: point `path`"), "{err}");
    test.1[3073] = 1;
    std::fs::write(dir.path().join("test_batch.bin"), &test.1).unwrap();
    std::fs::write(dir.path().join("batches.meta.txt"), "cat\ndog\ncat\n").unwrap();
    assert!(read_test().contains("batches.meta.txt: names the class `cat` twice"));
    std::fs::remove_file(dir.path().join("batches.meta.txt")).unwrap();
    assert!(read_test().contains("has no batches.meta.txt"));
}
