//! The `download` sources on real-format data the tests write: WebDataset tar shards, a COCO
//! captions file, CIFAR binary batches. What is read, what is skipped and counted, and the errors
//! for data that is missing, undeclared or malformed.

mod common;

use common::Ws;

/// A PNG of the shapes generator and its caption.
fn shape(i: u64) -> (Vec<u8>, String) {
    let config = vlmflow_ml::data::shapes::ShapesConfig {
        seed: 5,
        image_size: 32,
        ..Default::default()
    };
    let sample = config.sample(i);
    (
        vlmflow_ml::data::shapes::render_png_bytes(&sample.image),
        sample.caption,
    )
}

fn tar_bytes(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, data.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

fn write_bytes(ws: &Ws, rel: &str, bytes: &[u8]) {
    let path = ws.path(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Two shards: `shard-000` with three good samples and one without a caption; `shard-001` with
/// two good samples, one whose image is corrupt, and a last sample cut short.
fn write_shards(ws: &Ws) {
    let mut first = Vec::new();
    for i in 0..3 {
        let (png, caption) = shape(i);
        first.push((format!("{i:06}.png"), png));
        first.push((format!("{i:06}.txt"), caption.into_bytes()));
    }
    first.push(("000003.png".into(), shape(3).0));
    write_bytes(ws, "data/shard-000.tar", &tar_bytes(&first));

    let mut second = Vec::new();
    for i in 10..12 {
        let (png, caption) = shape(i);
        second.push((format!("{i:06}.png"), png));
        let json = serde_json::json!({ "caption": caption, "width": 32 });
        second.push((format!("{i:06}.json"), json.to_string().into_bytes()));
    }
    second.push(("000012.jpg".into(), b"not a jpeg".to_vec()));
    second.push(("000012.txt".into(), b"a corrupt image".to_vec()));
    let (png, caption) = shape(13);
    second.push(("000013.txt".into(), caption.into_bytes()));
    // Cut inside the last member, 000013.png: after its header and half its bytes.
    let last_header = tar_bytes(&second).len() - 1024;
    let cut = last_header + 512 + png.len() / 2;
    second.push(("000013.png".into(), png));
    write_bytes(ws, "data/shard-001.tar", &tar_bytes(&second)[..cut]);
}

#[test]
fn webdataset_shards_stream_into_images_and_captions_and_count_what_they_skip() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
inputs = ["data"]
params = { source = "webdataset", shards = "data/shard-{000..001}.tar" }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 0 }
"#,
    );
    write_shards(&ws);
    ws.build_ok(&[]);
    assert_eq!(ws.metric("download", "images_ok", None), 6.0);
    assert_eq!(ws.metric("download", "images_skipped", None), 2.0);
    assert_eq!(ws.metric("download", "skipped_no_caption", None), 1.0);
    assert_eq!(ws.metric("download", "skipped_truncated", None), 1.0);
    assert_eq!(ws.metric("download", "shards", None), 2.0);
    assert!(ws.exists("out/download/images/shard-000/000000.png"));
    assert!(ws.exists("out/download/images/shard-001/000012.jpg"));
    let captions = ws.read("out/download/captions.jsonl");
    assert_eq!(captions.lines().count(), 6);
    assert!(captions.contains(&shape(11).1), "json captions are read");
    assert!(
        !ws.exists("out/download/classes.json"),
        "no labels, no classes"
    );
    // The corrupt image passes download and is skipped by preprocess.
    assert_eq!(ws.metric("preprocess", "records_train", None), 5.0);
    assert_eq!(ws.metric("preprocess", "skipped_corrupt", None), 1.0);
    let log = ws.run(&["log", "download", "--verbose"]);
    assert!(
        log.stdout.contains("data/shard-001.tar is cut short"),
        "the log says which shard was cut short\n{log}"
    );
    assert!(log.stdout.contains("000003"), "{log}");
}

#[test]
fn a_missing_or_undeclared_shard_fails_naming_it_and_leaves_no_artifact() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
inputs = ["data"]
params = { source = "webdataset", shards = ["data/shard-{000..001}.tar", "data/shard-002.tar"] }
"#,
    );
    write_shards(&ws);
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout
            .contains("shard data/shard-002.tar does not exist"),
        "{run}"
    );
    assert!(!ws.exists("out/download"));

    ws.stagefile(
        r#"
[stages.download]
kind = "download"
inputs = ["data/shard-000.tar"]
params = { source = "webdataset", shards = "data/shard-{000..001}.tar" }
"#,
    );
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout
            .contains("data/shard-001.tar, which is not among its `inputs`"),
        "{run}"
    );

    ws.stagefile(
        r#"
[stages.download]
kind = "download"
inputs = ["data"]
params = { source = "webdataset", shards = "data/shard-{000..001.tar" }
"#,
    );
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.contains("param `shards`") && run.stdout.contains("never closed"),
        "{run}"
    );
}

/// A COCO-style folder: three images on disk; four listed (one missing on disk, one without a
/// caption); five captions, one of them for an image id nobody listed.
fn write_coco(ws: &Ws) {
    for i in 0..3 {
        write_bytes(ws, &format!("coco/val2017/{i:012}.png"), &shape(i).0);
    }
    let coco = serde_json::json!({
        "info": { "description": "tiny" },
        "images": [
            { "id": 10, "file_name": "000000000000.png" },
            { "id": 11, "file_name": "000000000001.png" },
            { "id": 12, "file_name": "000000000002.png" },
            { "id": 13, "file_name": "000000000003.png" },
        ],
        "annotations": [
            { "image_id": 10, "id": 1, "caption": shape(0).1 },
            { "image_id": 10, "id": 2, "caption": "another caption of the first image" },
            { "image_id": 11, "id": 3, "caption": shape(1).1 },
            { "image_id": 13, "id": 4, "caption": "an image that is not on disk" },
            { "image_id": 99, "id": 5, "caption": "an image nobody listed" },
        ],
    });
    ws.write(
        "coco/annotations/captions_val2017.json",
        &serde_json::to_string_pretty(&coco).unwrap(),
    );
}

const COCO_STAGEFILE: &str = r#"
[stages.download]
kind = "download"
inputs = ["coco"]
params = { source = "local", captions = "coco/annotations/captions_val2017.json", images = "coco/val2017" }
"#;

#[test]
fn a_coco_captions_file_gives_one_record_per_caption_and_copies_each_image_once() {
    let ws = Ws::new(COCO_STAGEFILE);
    write_coco(&ws);
    ws.build_ok(&[]);
    assert_eq!(ws.metric("download", "records", None), 3.0);
    assert_eq!(ws.metric("download", "images_ok", None), 2.0);
    assert_eq!(ws.metric("download", "images_skipped", None), 2.0);
    assert_eq!(ws.metric("download", "skipped_missing", None), 1.0);
    assert_eq!(ws.metric("download", "skipped_no_caption", None), 1.0);
    assert_eq!(ws.metric("download", "skipped_unknown_image", None), 1.0);
    assert_eq!(ws.files_under("out/download/images").len(), 2);
    let captions = ws.read("out/download/captions.jsonl");
    let lines: Vec<&str> = captions.lines().collect();
    assert_eq!(lines.len(), 3, "{captions}");
    assert!(lines[0].contains("images/000000000000.png") && lines[1].contains("another caption"));

    ws.stagefile(&COCO_STAGEFILE.replace("images =", "captions_per_image = \"first\", images ="));
    let first = ws.build_ok(&[]);
    assert_eq!(first.status_of("download"), "ran", "{first}");
    assert_eq!(ws.metric("download", "records", None), 2.0);
    assert!(
        !ws.read("out/download/captions.jsonl")
            .contains("another caption")
    );
}

#[test]
fn malformed_coco_json_fails_naming_the_file() {
    let ws = Ws::new(COCO_STAGEFILE);
    write_coco(&ws);
    let text = ws.read("coco/annotations/captions_val2017.json");
    ws.write(
        "coco/annotations/captions_val2017.json",
        &text[..text.len() - 20],
    );
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.contains("captions_val2017.json:") && run.stdout.contains("not valid JSON"),
        "{run}"
    );
    assert!(!ws.exists("out/download"));
}

#[test]
fn captions_per_image_on_a_file_that_is_not_coco_is_an_error() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
inputs = ["raw"]
params = { source = "local", captions = "raw/captions.json", captions_per_image = "first" }
"#,
    );
    write_bytes(&ws, "raw/a.png", &shape(0).0);
    ws.write(
        "raw/captions.json",
        "{\"image\": \"a.png\", \"caption\": \"x\"}\n",
    );
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout
            .contains("`captions_per_image` applies to COCO captions files"),
        "{run}"
    );
}

/// A CIFAR-100 archive as distributed (`cifar-100-binary/…` in a `.tar.gz`): three coarse
/// classes, unsorted and with underscores; two training images and one test image.
fn write_cifar100_archive(ws: &Ws) {
    use std::io::Write;
    let record = |coarse: u8, fine: u8, value: u8| {
        let mut r = vec![coarse, fine];
        r.extend(std::iter::repeat_n(value, 3072));
        r
    };
    let members: Vec<(String, Vec<u8>)> = vec![
        (
            "train.bin".into(),
            [record(0, 1, 10), record(2, 0, 20)].concat(),
        ),
        (
            "coarse_label_names.txt".into(),
            b"vehicles_1\naquatic_mammals\nfish\n".to_vec(),
        ),
        (
            "fine_label_names.txt".into(),
            b"apple\naquarium_fish\n".to_vec(),
        ),
        ("test.bin".into(), record(1, 1, 30)),
    ];
    let members: Vec<(String, Vec<u8>)> = members
        .into_iter()
        .map(|(name, bytes)| (format!("cifar-100-binary/{name}"), bytes))
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes(&members)).unwrap();
    write_bytes(ws, "data/cifar-100-binary.tar.gz", &gz.finish().unwrap());
}

#[test]
fn cifar100_from_the_archive_keeps_the_official_class_order_and_its_split() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
inputs = ["data/cifar-100-binary.tar.gz"]
params = { source = "cifar100", path = "data/cifar-100-binary.tar.gz", split = "all", labels = "coarse" }
"#,
    );
    write_cifar100_archive(&ws);
    ws.build_ok(&[]);
    assert_eq!(ws.metric("download", "images_ok", None), 3.0);
    assert_eq!(ws.metric("download", "classes", None), 3.0);
    let classes: Vec<String> = serde_json::from_str(&ws.read("out/download/classes.json")).unwrap();
    assert_eq!(classes, ["vehicles 1", "aquatic mammals", "fish"]);
    let records: Vec<serde_json::Value> = ws
        .read("out/download/captions.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(&str, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["image"].as_str().unwrap(),
                r["caption"].as_str().unwrap(),
                r["label"].as_str().unwrap(),
                r["split"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "images/train/00000.png",
                "a photo of a vehicles 1.",
                "vehicles 1",
                "train"
            ),
            (
                "images/train/00001.png",
                "a photo of a fish.",
                "fish",
                "train"
            ),
            (
                "images/test/00000.png",
                "a photo of a aquatic mammals.",
                "aquatic mammals",
                "validation"
            ),
        ]
    );
    let png = image::open(ws.path("out/download/images/test/00000.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(
        (png.dimensions(), png.get_pixel(3, 4).0),
        ((32, 32), [30, 30, 30])
    );

    // The fine labels by default.
    ws.stagefile(&ws.read("Stagefile").replace(", labels = \"coarse\"", ""));
    ws.build_ok(&[]);
    let classes: Vec<String> = serde_json::from_str(&ws.read("out/download/classes.json")).unwrap();
    assert_eq!(classes, ["apple", "aquarium fish"]);
}

#[test]
fn a_cifar_batch_of_the_wrong_size_or_a_misplaced_param_fails_naming_it() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
inputs = ["cifar"]
params = { source = "cifar10", path = "cifar" }
"#,
    );
    ws.write("cifar/batches.meta.txt", "cat\ndog\n");
    write_bytes(&ws, "cifar/test_batch.bin", &vec![0u8; 3073 * 2 + 100]);
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.contains(
            "test_batch.bin: is 6246 bytes, not a whole number of 3073-byte CIFAR-10 records"
        ),
        "{run}"
    );
    assert!(!ws.exists("out/download"), "no half-written artifact");

    ws.stagefile(
        r#"
[stages.download]
kind = "download"
inputs = ["cifar"]
params = { source = "cifar10", path = "cifar", labels = "coarse" }
"#,
    );
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("CIFAR-10 has one: remove it"), "{run}");

    ws.stagefile(
        r#"
[stages.download]
kind = "download"
inputs = ["cifar"]
params = { source = "cifar10", path = "cifar-10-batches-bin" }
"#,
    );
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout
            .contains("cifar-10-batches-bin, which is not among its `inputs`"),
        "{run}"
    );
}
