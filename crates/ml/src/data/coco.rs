//! COCO captions files (`annotations/captions_val2017.json`): one JSON object whose `images`
//! array names the image files (`id`, `file_name`) and whose `annotations` array holds the
//! captions (`image_id`, `caption`; COCO has about five per image). A file is taken for COCO by
//! its content, a JSON object with both arrays, not by its name, so a `.json` file of caption
//! records (JSON Lines) still reads as such.
//!
//! Records come in the order of `images`, each image's captions in the order of `annotations`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;

use super::captions::CaptionRecord;
use super::{Result, format_err, io_err};

/// How many records an image with several captions becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptionsPerImage {
    /// One record per (image, caption) pair: COCO's five captions are five training pairs.
    #[default]
    All,
    /// The image's first caption only: one record per image.
    First,
}

/// A COCO captions file, as caption records plus what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coco {
    /// `image` is the `file_name` as written (relative to the images folder).
    pub records: Vec<CaptionRecord>,
    /// Annotations whose `image_id` is in no `images` entry.
    pub unknown_image: u64,
    /// Annotations whose caption is empty or only spaces.
    pub empty_caption: u64,
    /// Images that no (non-empty) caption refers to.
    pub images_without_caption: u64,
}

/// Just enough of the file to tell COCO from a caption record, and to read COCO.
#[derive(Deserialize)]
struct Probe {
    images: Option<Vec<Image>>,
    annotations: Option<Vec<Annotation>>,
}

#[derive(Deserialize)]
struct Image {
    id: Id,
    file_name: String,
}

#[derive(Deserialize)]
struct Annotation {
    image_id: Id,
    caption: String,
}

/// COCO's ids are numbers; derived datasets sometimes write strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(untagged)]
enum Id {
    Number(u64),
    Text(String),
}

/// Read `path` as a COCO captions file, or None when it is not one (its first JSON value is not
/// an object with `images` and `annotations` arrays). Malformed JSON is an error naming the file,
/// line and column.
pub fn read_if_coco(path: &Path, per_image: CaptionsPerImage) -> Result<Option<Coco>> {
    let mut reader = BufReader::new(File::open(path).map_err(io_err(path))?);
    if !starts_with_object(&mut reader).map_err(io_err(path))? {
        return Ok(None);
    }
    let mut values = serde_json::Deserializer::from_reader(reader).into_iter::<Probe>();
    let probe = match values.next() {
        None => return Ok(None),
        Some(Ok(probe)) => probe,
        Some(Err(e)) if e.is_io() => return Err(io_err(path)(e.into())),
        Some(Err(e)) if e.is_data() => {
            return Err(format_err(
                path,
                Some(e.line()),
                format!(
                    "not a COCO captions file: images[] need `id` and `file_name`, annotations[] \
                     `image_id` and `caption`: {e}"
                ),
            ));
        }
        Some(Err(e)) => {
            return Err(format_err(
                path,
                Some(e.line()),
                format!("not valid JSON: {e}"),
            ));
        }
    };
    let (Some(images), Some(annotations)) = (probe.images, probe.annotations) else {
        return Ok(None);
    };
    if let Some(Ok(_)) | Some(Err(_)) = values.next() {
        return Err(format_err(
            path,
            None,
            "more JSON after the COCO object: a captions file holds one object",
        ));
    }
    from_parts(path, images, annotations, per_image).map(Some)
}

/// Whether the first non-blank byte is `{` (a JSON object), consuming only the blanks.
fn starts_with_object(reader: &mut impl BufRead) -> std::io::Result<bool> {
    loop {
        let buf = reader.fill_buf()?;
        let Some(&first) = buf.first() else {
            return Ok(false);
        };
        if first.is_ascii_whitespace() {
            reader.consume(1);
            continue;
        }
        return Ok(first == b'{');
    }
}

fn from_parts(
    path: &Path,
    images: Vec<Image>,
    annotations: Vec<Annotation>,
    per_image: CaptionsPerImage,
) -> Result<Coco> {
    let mut index = HashMap::with_capacity(images.len());
    for (i, image) in images.iter().enumerate() {
        if index.insert(&image.id, i).is_some() {
            return Err(format_err(
                path,
                None,
                format!(
                    "image id {:?} appears twice in images[]: each image needs its own id",
                    image.id
                ),
            ));
        }
    }
    let mut captions: Vec<Vec<String>> = vec![Vec::new(); images.len()];
    let (mut unknown_image, mut empty_caption) = (0, 0);
    for annotation in annotations {
        let Some(&i) = index.get(&annotation.image_id) else {
            unknown_image += 1;
            continue;
        };
        let caption = annotation.caption.trim();
        if caption.is_empty() {
            empty_caption += 1;
            continue;
        }
        captions[i].push(caption.to_string());
    }
    let mut records = Vec::new();
    let mut images_without_caption = 0;
    for (image, captions) in images.into_iter().zip(captions) {
        if captions.is_empty() {
            images_without_caption += 1;
        }
        let keep = match per_image {
            CaptionsPerImage::All => captions.len(),
            CaptionsPerImage::First => captions.len().min(1),
        };
        records.extend(
            captions
                .into_iter()
                .take(keep)
                .map(|caption| CaptionRecord {
                    image: image.file_name.clone(),
                    caption,
                    label: None,
                    split: None,
                    qa: Vec::new(),
                }),
        );
    }
    Ok(Coco {
        records,
        unknown_image,
        empty_caption,
        images_without_caption,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COCO: &str = r#"{
  "info": {"description": "a tiny COCO"},
  "licenses": [],
  "images": [
    {"id": 397133, "file_name": "000000397133.jpg", "width": 640},
    {"id": 37777, "file_name": "000000037777.jpg"},
    {"id": 5, "file_name": "no_captions.jpg"}
  ],
  "annotations": [
    {"image_id": 397133, "id": 1, "caption": "A man is in a kitchen making pizzas. "},
    {"image_id": 37777, "id": 2, "caption": "The dining table near the kitchen."},
    {"image_id": 397133, "id": 3, "caption": "Man in apron standing in front of an oven."},
    {"image_id": 99, "id": 4, "caption": "An image nobody listed."},
    {"image_id": 37777, "id": 5, "caption": "  "}
  ]
}"#;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn pairs(coco: &Coco) -> Vec<(&str, &str)> {
        coco.records
            .iter()
            .map(|r| (r.image.as_str(), r.caption.as_str()))
            .collect()
    }

    #[test]
    fn every_caption_of_every_image_in_image_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "captions_val2017.json", COCO);
        let coco = read_if_coco(&path, CaptionsPerImage::All)
            .unwrap()
            .expect("COCO");
        assert_eq!(
            pairs(&coco),
            [
                ("000000397133.jpg", "A man is in a kitchen making pizzas."),
                (
                    "000000397133.jpg",
                    "Man in apron standing in front of an oven."
                ),
                ("000000037777.jpg", "The dining table near the kitchen."),
            ]
        );
        assert_eq!(
            (
                coco.unknown_image,
                coco.empty_caption,
                coco.images_without_caption
            ),
            (1, 1, 1)
        );
        let first = read_if_coco(&path, CaptionsPerImage::First)
            .unwrap()
            .unwrap();
        assert_eq!(
            pairs(&first),
            [
                ("000000397133.jpg", "A man is in a kitchen making pizzas."),
                ("000000037777.jpg", "The dining table near the kitchen."),
            ]
        );
    }

    #[test]
    fn json_that_is_not_coco_is_left_to_the_caption_readers() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            (
                "lines.json",
                "{\"image\": \"a.png\", \"caption\": \"x\"}\n{\"image\": \"b.png\", \"caption\": \"y\"}\n",
            ),
            ("images_only.json", r#"{"images": [], "categories": []}"#),
            ("empty.json", ""),
            ("list.json", "[1, 2]"),
        ] {
            let path = write(dir.path(), name, text);
            let got = read_if_coco(&path, CaptionsPerImage::All);
            assert!(matches!(got, Ok(None)), "{name}: {got:?}");
        }
    }

    #[test]
    fn malformed_files_are_errors_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let cut = &COCO[..COCO.len() / 2];
        let path = write(dir.path(), "cut.json", cut);
        let err = read_if_coco(&path, CaptionsPerImage::All)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cut.json:") && err.contains("not valid JSON"),
            "{err}"
        );

        let instances = r#"{"images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]}"#;
        let path = write(dir.path(), "instances.json", instances);
        let err = read_if_coco(&path, CaptionsPerImage::All)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("instances.json:2:") && err.contains("caption"),
            "{err}"
        );

        let twice = r#"{"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}],
            "annotations": []}"#;
        let path = write(dir.path(), "twice.json", twice);
        let err = read_if_coco(&path, CaptionsPerImage::All)
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice.json") && err.contains("twice"), "{err}");

        let missing = dir.path().join("gone.json");
        let err = read_if_coco(&missing, CaptionsPerImage::All)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gone.json"), "{err}");
    }
}
