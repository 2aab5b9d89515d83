//! CIFAR-10 and CIFAR-100 in their binary format, from the extracted folder
//! (`cifar-10-batches-bin/`, `cifar-100-binary/`) or the archive as distributed (`.tar.gz`;
//! members are found by file name, in any folder of the archive).
//!
//! A batch file is a run of fixed-size records: the label byte(s), then 3072 pixel bytes — the
//! 1024 red values of the 32×32 image row by row, then the green, then the blue.
//! - CIFAR-10: 1 label byte; `data_batch_1.bin` … `data_batch_5.bin` (train), `test_batch.bin`;
//!   class names one a line in `batches.meta.txt`.
//! - CIFAR-100: 2 label bytes, coarse then fine; `train.bin`, `test.bin`; class names in
//!   `fine_label_names.txt` and `coarse_label_names.txt`.
//!
//! Class names keep the official order (a label byte is an index into it) and are given with
//! underscores as spaces (`aquarium_fish` → `aquarium fish`), the form prompts want.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Deserialize;

use super::split::Split;
use super::{DataError, format_err, io_err, open_maybe_gzipped};

/// Side of a CIFAR image, in pixels.
pub const SIDE: u32 = 32;
/// Pixel bytes of a record: 3 planes of 32×32.
pub const PIXEL_BYTES: usize = 3 * 32 * 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Cifar10,
    Cifar100,
}

/// Which of CIFAR-100's two label sets; CIFAR-10 has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Labels {
    /// CIFAR-100's 100 classes.
    #[default]
    Fine,
    /// CIFAR-100's 20 superclasses.
    Coarse,
}

/// Which batches to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subset {
    /// The test batch (10 000 images): what zero-shot evaluation reads.
    #[default]
    Test,
    /// The training batches (50 000 images).
    Train,
    /// Both: training batches as the train split, the test batch as validation.
    All,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Cifar10 => "CIFAR-10",
            Variant::Cifar100 => "CIFAR-100",
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }

    /// Bytes of one record: label byte(s) and pixels.
    pub fn record_len(self) -> usize {
        self.label_bytes() + PIXEL_BYTES
    }

    /// The batch files of `subset`, in reading order, and the split their images belong to.
    pub fn batches(self, subset: Subset) -> Vec<(&'static str, Split)> {
        let (train, test): (&[&str], &str) = match self {
            Variant::Cifar10 => (
                &[
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                ],
                "test_batch.bin",
            ),
            Variant::Cifar100 => (&["train.bin"], "test.bin"),
        };
        let train = train.iter().map(|b| (*b, Split::Train));
        let test = std::iter::once((test, Split::Validation));
        match subset {
            Subset::Test => test.collect(),
            Subset::Train => train.collect(),
            Subset::All => train.chain(test).collect(),
        }
    }

    /// The file of class names for `labels`.
    pub fn class_file(self, labels: Labels) -> &'static str {
        match (self, labels) {
            (Variant::Cifar10, _) => "batches.meta.txt",
            (Variant::Cifar100, Labels::Fine) => "fine_label_names.txt",
            (Variant::Cifar100, Labels::Coarse) => "coarse_label_names.txt",
        }
    }

    /// Where the label of `labels` sits in a record.
    fn label_offset(self, labels: Labels) -> usize {
        match (self, labels) {
            (Variant::Cifar100, Labels::Fine) => 1,
            _ => 0,
        }
    }
}

/// One image as read, before its label is checked against the class names.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// Position of its batch file in [`Variant::batches`].
    pub batch: usize,
    /// Position in its batch file.
    pub index: u64,
    pub split: Split,
    /// Index into the class names.
    pub label: usize,
    /// 3072 bytes: R plane, G plane, B plane.
    pub pixels: &'a [u8],
}

/// Read the images of `subset` from `path` (the extracted folder, or a `.tar`/`.tar.gz` archive)
/// and hand each to `visit`; return the class names in label order. Errors name the file: a
/// missing one, a size that is not a whole number of records, a label with no class name.
pub fn read<E: From<DataError>>(
    path: &Path,
    variant: Variant,
    labels: Labels,
    subset: Subset,
    mut visit: impl FnMut(Image<'_>) -> Result<(), E>,
) -> Result<Vec<String>, E> {
    let batches = variant.batches(subset);
    let class_file = variant.class_file(labels);
    let mut classes = None;
    let mut seen: Vec<Option<BatchRead>> = vec![None; batches.len()];
    let mut read_batch_at = |i: usize, at: PathBuf, len: u64, reader: &mut dyn Read| {
        let (_, split) = batches[i];
        let read = read_batch(&at, reader, len, variant, labels, |index, label, pixels| {
            visit(Image {
                batch: i,
                index,
                split,
                label,
                pixels,
            })
        })?;
        seen[i] = Some(read);
        Ok::<_, E>(())
    };
    if path.is_dir() {
        for file in std::iter::once(class_file).chain(batches.iter().map(|b| b.0)) {
            if !path.join(file).is_file() {
                return Err(missing(path, file).into());
            }
        }
        let names = path.join(class_file);
        let text = std::fs::read_to_string(&names).map_err(io_err(&names))?;
        classes = Some(parse_classes(&names, &text)?);
        for (i, (batch, _)) in batches.iter().enumerate() {
            let file = path.join(batch);
            let len = std::fs::metadata(&file).map_err(io_err(&file))?.len();
            let mut reader = BufReader::new(std::fs::File::open(&file).map_err(io_err(&file))?);
            read_batch_at(i, file, len, &mut reader)?;
        }
    } else {
        let mut archive = tar::Archive::new(open_maybe_gzipped(path)?);
        let entries = archive.entries().map_err(io_err(path))?;
        for entry in entries {
            let mut entry = entry.map_err(io_err(path))?;
            let member = entry.path().map_err(io_err(path))?.into_owned();
            let at = path.join(&member);
            let name = member.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == class_file {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(io_err(&at))?;
                classes = Some(parse_classes(&at, &text)?);
            } else if let Some(i) = batches.iter().position(|(b, _)| *b == name) {
                let len = entry.size();
                read_batch_at(i, at, len, &mut entry)?;
            }
        }
    }
    let Some(classes) = classes else {
        return Err(missing(path, class_file).into());
    };
    for ((batch, _), read) in batches.iter().zip(&seen) {
        let Some(read) = read else {
            return Err(missing(path, batch).into());
        };
        if let Some((label, index)) = read.max_label
            && label >= classes.len()
        {
            return Err(format_err(
                &read.path,
                None,
                format!(
                    "record {index} has label {label}, but {class_file} names {} classes",
                    classes.len()
                ),
            )
            .into());
        }
    }
    Ok(classes)
}

fn missing(path: &Path, file: &str) -> DataError {
    format_err(
        path,
        None,
        format!(
            "has no {file}: point `path` at the extracted CIFAR binary folder or its .tar.gz archive"
        ),
    )
}

/// What one batch file held.
#[derive(Debug, Clone)]
struct BatchRead {
    path: PathBuf,
    /// The largest label and the first record that has it.
    max_label: Option<(usize, u64)>,
}

/// Read the `len` bytes of one batch file, record by record: `visit(index, label, pixels)`.
fn read_batch<E: From<DataError>>(
    path: &Path,
    reader: &mut dyn Read,
    len: u64,
    variant: Variant,
    labels: Labels,
    mut visit: impl FnMut(u64, usize, &[u8]) -> Result<(), E>,
) -> Result<BatchRead, E> {
    let record_len = variant.record_len() as u64;
    if !len.is_multiple_of(record_len) {
        return Err(format_err(
            path,
            None,
            format!(
                "is {len} bytes, not a whole number of {record_len}-byte {} records: the file is cut \
                 short or not a {} binary batch",
                variant.name(),
                variant.name()
            ),
        )
        .into());
    }
    let mut record = vec![0u8; record_len as usize];
    let mut max_label: Option<(usize, u64)> = None;
    for index in 0..len / record_len {
        reader.read_exact(&mut record).map_err(io_err(path))?;
        let label = record[variant.label_offset(labels)] as usize;
        if max_label.is_none_or(|(max, _)| label > max) {
            max_label = Some((label, index));
        }
        visit(index, label, &record[variant.label_bytes()..])?;
    }
    Ok(BatchRead {
        path: path.to_path_buf(),
        max_label,
    })
}

/// Class names one a line (blank lines ignored), underscores as spaces; duplicates are an error.
pub fn parse_classes(path: &Path, text: &str) -> Result<Vec<String>, DataError> {
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.replace('_', " "))
        .collect();
    if names.is_empty() {
        return Err(format_err(path, None, "names no class"));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format_err(
                path,
                None,
                format!("names the class `{name}` twice"),
            ));
        }
    }
    Ok(names)
}

/// The image of a record's 3072 planar pixel bytes.
pub fn to_image(pixels: &[u8]) -> RgbImage {
    let plane = (SIDE * SIDE) as usize;
    RgbImage::from_fn(SIDE, SIDE, |x, y| {
        let i = (y * SIDE + x) as usize;
        image::Rgb([pixels[i], pixels[plane + i], pixels[2 * plane + i]])
    })
}

#[cfg(test)]
#[path = "cifar_tests.rs"]
mod tests;
