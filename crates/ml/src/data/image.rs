//! Images in: decode (PNG, JPEG), resize the short side to `image_size` with a triangle
//! (bilinear) filter, centre-crop to a square, and lay out as CHW bytes.
//!
//! Shards keep images as u8; [`normalize_into`] turns them into CLIP-normalised floats at load
//! time. A corrupt or truncated file is an error naming the file, never a panic.

use std::io::Cursor;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{ImageReader, RgbImage};

use super::{DataError, Result, io_err};

/// Per-channel (R, G, B) mean and standard deviation of OpenAI CLIP's preprocessing.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Decode an encoded image (format guessed from its bytes); `name` is what errors call it.
pub fn decode(bytes: &[u8], name: &Path) -> Result<RgbImage> {
    let image_err = |source| DataError::Image {
        path: name.to_path_buf(),
        source,
    };
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(io_err(name))?;
    // Decoders are fuzzed and return errors on bad input; catching a panic as well keeps one
    // bad file in a million from taking a whole preprocessing run down.
    let decoded = std::panic::catch_unwind(move || reader.decode())
        .map_err(|_| super::format_err(name, None, "the image decoder panicked on this file"))?
        .map_err(image_err)?;
    Ok(decoded.into_rgb8())
}

/// Read and decode an image file.
pub fn load(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    decode(&bytes, path)
}

/// Resize so the short side is `size` (triangle filter), then crop the centre `size`×`size`.
/// An image already `size`×`size` is returned unchanged.
pub fn resize_center_crop(image: &RgbImage, size: u32) -> RgbImage {
    assert!(size > 0, "image size must be positive");
    let (w, h) = image.dimensions();
    if (w, h) == (size, size) {
        return image.clone();
    }
    let short = w.min(h);
    let scale = size as f64 / short as f64;
    // The short side becomes exactly `size`; the long side at least `size`.
    let (nw, nh) = if w <= h {
        (size, ((h as f64 * scale).round() as u32).max(size))
    } else {
        (((w as f64 * scale).round() as u32).max(size), size)
    };
    let resized = imageops::resize(image, nw, nh, FilterType::Triangle);
    let (x, y) = ((nw - size) / 2, (nh - size) / 2);
    imageops::crop_imm(&resized, x, y, size, size).to_image()
}

/// Planar CHW bytes (R plane, G plane, B plane) of an RGB image.
pub fn to_chw(image: &RgbImage) -> Vec<u8> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, p) in image.pixels().enumerate() {
        out[i] = p[0];
        out[plane + i] = p[1];
        out[2 * plane + i] = p[2];
    }
    out
}

/// Decode, resize, crop and lay out as CHW: what preprocessing stores for each image.
pub fn decode_chw(bytes: &[u8], name: &Path, image_size: u32) -> Result<Vec<u8>> {
    Ok(to_chw(&resize_center_crop(
        &decode(bytes, name)?,
        image_size,
    )))
}

/// [`decode_chw`] of a file.
pub fn load_chw(path: &Path, image_size: u32) -> Result<Vec<u8>> {
    Ok(to_chw(&resize_center_crop(&load(path)?, image_size)))
}

/// [`load_chw`], normalised: what a vision tower takes for one image file.
pub fn load_normalized(path: &Path, image_size: u32) -> Result<Vec<f32>> {
    Ok(normalized(&load_chw(path, image_size)?))
}

/// [`decode_chw`], normalised: what a vision tower takes for one encoded image (`name` says
/// where it came from, for errors).
pub fn decode_normalized(bytes: &[u8], name: &Path, image_size: u32) -> Result<Vec<f32>> {
    Ok(normalized(&decode_chw(bytes, name, image_size)?))
}

fn normalized(chw: &[u8]) -> Vec<f32> {
    let mut pixels = vec![0f32; chw.len()];
    normalize_into(chw, &mut pixels);
    pixels
}

/// CHW u8 (3 planes) → CHW f32, `(x / 255 - mean[c]) / std[c]`. `out` must be as long as `chw`.
pub fn normalize_into(chw: &[u8], out: &mut [f32]) {
    assert_eq!(chw.len(), out.len(), "normalize_into: length mismatch");
    assert_eq!(chw.len() % 3, 0, "normalize_into: not 3 planes");
    let plane = chw.len() / 3;
    for c in 0..3 {
        let scale = 1.0 / (255.0 * CLIP_STD[c]);
        let shift = CLIP_MEAN[c] / CLIP_STD[c];
        let range = c * plane..(c + 1) * plane;
        for (o, &x) in out[range.clone()].iter_mut().zip(&chw[range]) {
            *o = f32::from(x) * scale - shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb};

    fn encoded(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 4) as u8, (y * 4) as u8, 128]))
    }

    #[test]
    fn png_and_jpeg_decode_resize_and_crop() {
        let image = gradient(60, 40);
        let png = encoded(&image, ImageFormat::Png);
        assert_eq!(decode(&png, Path::new("a.png")).unwrap(), image);

        let chw = decode_chw(&png, Path::new("a.png"), 20).unwrap();
        assert_eq!(chw.len(), 3 * 20 * 20);
        // Blue is constant; red grows left to right, green top to bottom.
        assert!(chw[800..].iter().all(|&b| b == 128));
        assert!(chw[19] > chw[0] && chw[400 + 19 * 20] > chw[400]);

        let jpeg = encoded(&image, ImageFormat::Jpeg);
        let back = decode(&jpeg, Path::new("a.jpg")).unwrap();
        assert_eq!(back.dimensions(), (60, 40));
        assert!(back.get_pixel(30, 20)[2].abs_diff(128) < 8);
    }

    #[test]
    fn crop_takes_the_centre_of_the_long_side() {
        // A tall image: 10 wide, 30 high; the middle third is white, the rest black.
        let image = RgbImage::from_fn(10, 30, |_, y| {
            Rgb(if (10..20).contains(&y) {
                [255; 3]
            } else {
                [0; 3]
            })
        });
        let out = resize_center_crop(&image, 10);
        assert_eq!(out.dimensions(), (10, 10));
        assert!(out.pixels().all(|p| p[0] == 255));
        let same = gradient(8, 8);
        assert_eq!(resize_center_crop(&same, 8), same);
        assert_eq!(
            resize_center_crop(&gradient(5, 3), 16).dimensions(),
            (16, 16)
        );
    }

    #[test]
    fn corrupt_and_truncated_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let png = encoded(&gradient(64, 64), ImageFormat::Png);
        let jpeg = encoded(&gradient(64, 64), ImageFormat::Jpeg);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated.png", png[..png.len() / 2].to_vec()),
            ("truncated.jpg", jpeg[..jpeg.len() / 3].to_vec()),
            ("garbage.png", b"not an image at all".to_vec()),
            ("empty.jpg", Vec::new()),
            ("flipped.png", {
                let mut p = png.clone();
                for b in &mut p[40..80] {
                    *b ^= 0x5a;
                }
                p
            }),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            let err = load(&path).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
        let err = load(&dir.path().join("missing.png"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.png"), "{err}");
    }

    #[test]
    fn normalisation_matches_the_formula() {
        let chw = [0u8, 255, 128, 128, 64, 255];
        let mut out = [0f32; 6];
        normalize_into(&chw, &mut out);
        for (i, (&x, &y)) in chw.iter().zip(&out).enumerate() {
            let c = i / 2;
            let expect = (f32::from(x) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
            assert!((y - expect).abs() < 1e-5, "{i}: {y} vs {expect}");
        }
    }
}
