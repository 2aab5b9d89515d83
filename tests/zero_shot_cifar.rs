//! Zero-shot evaluation on CIFAR: a tiny CIFAR-10-format folder (ten classes, each a solid colour
//! with a little noise) → download (cifar10) → preprocess → zero-shot-eval of a tiny CLIP trained
//! on the training batches. CIFAR's test batch is the validation split, whatever the hash says.

mod common;

use common::Ws;

/// Class names in their "official" order, deliberately not sorted, and their colours.
const CLASSES: [(&str, [u8; 3]); 10] = [
    ("red", [220, 30, 30]),
    ("green", [30, 200, 40]),
    ("blue", [30, 40, 220]),
    ("yellow", [230, 220, 30]),
    ("cyan", [30, 210, 220]),
    ("magenta", [210, 30, 210]),
    ("white", [245, 245, 245]),
    ("black", [15, 15, 15]),
    ("orange", [240, 140, 20]),
    ("gray", [128, 128, 128]),
];

/// `per_class` records of each class: label byte, then R, G and B planes with a little noise.
fn batch(per_class: usize, seed: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 21) as i32 - 10
    };
    for i in 0..per_class * CLASSES.len() {
        let label = i % CLASSES.len();
        out.push(label as u8);
        for plane in 0..3 {
            let base = CLASSES[label].1[plane] as i32;
            out.extend((0..1024).map(|_| (base + noise()).clamp(0, 255) as u8));
        }
    }
    out
}

fn write_cifar(ws: &Ws) {
    let dir = ws.path("cifar/cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<&str> = CLASSES.iter().map(|c| c.0).collect();
    std::fs::write(dir.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
    for b in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), batch(4, b)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), batch(3, 99)).unwrap();
}

const PIPELINE: &str = r#"
[stages.cifar-train]
kind = "download"
inputs = ["cifar"]
params = { source = "cifar10", path = "cifar/cifar-10-batches-bin", split = "train" }

[stages.prep-train]
kind = "preprocess"
needs = ["cifar-train"]

[stages.clip-train]
kind = "clip-train"
needs = ["prep-train"]
params = { steps = 60, batch_size = 32, lr = 2e-3, warmup_steps = 10, checkpoint_every = 1000 }

[stages.cifar-test]
kind = "download"
inputs = ["cifar"]
params = { source = "cifar10", path = "cifar/cifar-10-batches-bin" }

[stages.prep-test]
kind = "preprocess"
needs = ["cifar-test"]

[stages.zero-shot-eval]
kind = "zero-shot-eval"
needs = ["clip-train", "prep-test"]
"#;

#[test]
fn a_clip_trained_on_cifar_train_batches_classifies_the_test_batch() {
    let ws = Ws::new(PIPELINE);
    write_cifar(&ws);
    ws.build_ok(&[]);

    // Train batches: 5 × 40 images, all in the train split; the test batch: 30, all validation.
    assert_eq!(ws.metric("cifar-train", "images_ok", None), 200.0);
    assert_eq!(ws.metric("prep-train", "records_train", None), 200.0);
    assert_eq!(ws.metric("prep-train", "records_validation", None), 0.0);
    assert_eq!(ws.metric("cifar-test", "images_ok", None), 30.0);
    assert_eq!(ws.metric("prep-test", "records_train", None), 0.0);
    assert_eq!(ws.metric("prep-test", "records_validation", None), 30.0);
    assert!(ws.exists("out/cifar-test/images/test_batch/00029.png"));
    let first = ws.read("out/cifar-test/captions.jsonl");
    let first = first.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"image":"images/test_batch/00000.png","caption":"a photo of a red.","label":"red","split":"validation"}"#
    );

    // Classes keep the file's order, through preprocess to the evaluation.
    let names: Vec<&str> = CLASSES.iter().map(|c| c.0).collect();
    let classes: Vec<String> =
        serde_json::from_str(&ws.read("out/cifar-test/classes.json")).unwrap();
    assert_eq!(classes, names);
    let meta: serde_json::Value =
        serde_json::from_str(&ws.read("out/prep-test/meta.json")).unwrap();
    assert_eq!(meta["classes"], serde_json::json!(names));

    assert_eq!(ws.metric("zero-shot-eval", "images", None), 30.0);
    let per_class = ws.query(
        "SELECT m.name FROM metrics m JOIN stage_state s ON s.run_id = m.run_id \
         WHERE s.stage = 'zero-shot-eval' AND m.name LIKE 'per_class.%'",
    );
    assert_eq!(per_class.len(), 10, "{per_class:?}");
    let (top1, top5) = (
        ws.metric("zero-shot-eval", "top1", None),
        ws.metric("zero-shot-eval", "top5", None),
    );
    // Ten classes: chance is 0.1 top-1 and 0.5 top-5.
    assert!(
        top1 > 0.4 && top5 > 0.8,
        "above chance: top-1 {top1}, top-5 {top5}"
    );
}
