//! Images on the way in from the web: decode whatever a server sent (PNG, JPEG or WebP, guessed
//! from the bytes, EXIF orientation applied), shrink so the short side is at most `short_side`
//! pixels keeping the aspect ratio, and re-encode as 8-bit RGB PNG or JPEG.
//!
//! Images are only ever shrunk: one already small enough keeps its size (preprocessing sizes
//! every image for the model later, and enlarging would only spend disk). Encoding is a pure
//! function of the pixels, so the same download gives the same bytes on every run.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::{self, FilterType};
use image::{
    DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageError, ImageReader, Limits,
    RgbImage,
};

/// The most memory one decode may allocate: 256 MiB, about 8000×8000 RGBA. Larger images are
/// refused as too large rather than risk running out of memory with many downloads in flight.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// How images are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lossless; what the artifact holds by default.
    Png,
    /// Lossy, several times smaller than PNG for photographs.
    Jpeg { quality: u8 },
}

impl Encoding {
    pub fn extension(self) -> &'static str {
        match self {
            Encoding::Png => "png",
            Encoding::Jpeg { .. } => "jpg",
        }
    }
}

/// A re-encoded image and its size.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// Not a format we decode, or corrupt or truncated data.
    #[error("not an image: {0}")]
    NotAnImage(String),
    /// An image whose decoded pixels would exceed [`MAX_DECODE_BYTES`].
    #[error("image too large to decode: {0}")]
    TooLarge(String),
    #[error("cannot encode the image: {0}")]
    Encode(String),
}

/// Decode `bytes`, shrink the short side to `short_side` (0: keep the size), encode.
pub fn thumbnail(
    bytes: &[u8],
    short_side: u32,
    encoding: Encoding,
) -> Result<Thumbnail, ThumbnailError> {
    let image = shrink(decode(bytes)?, short_side);
    let (width, height) = image.dimensions();
    Ok(Thumbnail {
        bytes: encode(&image, encoding)?,
        width,
        height,
    })
}

/// Decode an image of any supported format, oriented as its EXIF data says, as 8-bit RGB.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ThumbnailError> {
    decode_within(bytes, MAX_DECODE_BYTES)
}

/// [`decode`], allocating at most `max_alloc` bytes for the pixels.
fn decode_within(bytes: &[u8], max_alloc: u64) -> Result<RgbImage, ThumbnailError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ThumbnailError::NotAnImage(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ThumbnailError::NotAnImage(
            "unrecognised data (expected PNG, JPEG or WebP)".into(),
        ));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    // Decoders return errors on bad input; catching a panic as well keeps one hostile file in a
    // million from taking the whole download down.
    let decoded = std::panic::catch_unwind(move || -> Result<DynamicImage, ImageError> {
        let mut decoder = reader.into_decoder()?;
        // Decoders check the limits against their own buffers, not the image's: check that.
        let mut limits = Limits::default();
        limits.max_alloc = Some(max_alloc);
        limits.reserve(decoder.total_bytes())?;
        let orientation = decoder.orientation()?;
        let mut image = DynamicImage::from_decoder(decoder)?;
        image.apply_orientation(orientation);
        Ok(image)
    })
    .map_err(|_| ThumbnailError::NotAnImage("the image decoder panicked on this data".into()))?;
    match decoded {
        Ok(image) => Ok(image.into_rgb8()),
        Err(ImageError::Limits(e)) => Err(ThumbnailError::TooLarge(e.to_string())),
        Err(e) => Err(ThumbnailError::NotAnImage(e.to_string())),
    }
}

/// Shrink so the short side is `short_side`, keeping the aspect ratio (the long side rounds to
/// the nearest pixel). Images whose short side is already at most `short_side`, and any image
/// when `short_side` is 0, are returned as they are.
pub fn shrink(image: RgbImage, short_side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let short = w.min(h);
    if short_side == 0 || short <= short_side {
        return image;
    }
    let long = |side: u32| {
        ((u64::from(side) * u64::from(short_side) + u64::from(short) / 2) / u64::from(short)).max(1)
            as u32
    };
    let (nw, nh) = if w <= h {
        (short_side, long(h))
    } else {
        (long(w), short_side)
    };
    imageops::resize(&image, nw, nh, FilterType::Triangle)
}

/// Encode 8-bit RGB pixels.
pub fn encode(image: &RgbImage, encoding: Encoding) -> Result<Vec<u8>, ThumbnailError> {
    let mut out = Vec::new();
    let (w, h) = image.dimensions();
    let written =
        match encoding {
            Encoding::Png => {
                PngEncoder::new(&mut out).write_image(image.as_raw(), w, h, ExtendedColorType::Rgb8)
            }
            Encoding::Jpeg { quality } => JpegEncoder::new_with_quality(&mut out, quality)
                .write_image(image.as_raw(), w, h, ExtendedColorType::Rgb8),
        };
    written.map_err(|e| ThumbnailError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb, Rgba, RgbaImage};

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 77]))
    }

    fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn shrinks_the_short_side_and_keeps_the_aspect() {
        assert_eq!(shrink(gradient(300, 200), 100).dimensions(), (150, 100));
        assert_eq!(shrink(gradient(200, 300), 100).dimensions(), (100, 150));
        assert_eq!(shrink(gradient(301, 200), 100).dimensions(), (151, 100));
        assert_eq!(shrink(gradient(1000, 3), 1).dimensions(), (333, 1));
        // Never enlarged, and 0 keeps the size.
        assert_eq!(shrink(gradient(80, 60), 100).dimensions(), (80, 60));
        assert_eq!(shrink(gradient(300, 200), 0).dimensions(), (300, 200));
    }

    #[test]
    fn png_and_jpeg_in_png_or_jpeg_out_deterministically() {
        let source = DynamicImage::ImageRgb8(gradient(120, 90));
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let bytes = encoded(&source, format);
            let a = thumbnail(&bytes, 45, Encoding::Png).unwrap();
            assert_eq!((a.width, a.height), (60, 45), "{format:?}");
            let b = thumbnail(&bytes, 45, Encoding::Png).unwrap();
            assert_eq!(a.bytes, b.bytes, "same input, same bytes");
            let back = image::load_from_memory(&a.bytes).unwrap();
            assert_eq!((back.width(), back.height()), (60, 45));

            let j = thumbnail(&bytes, 0, Encoding::Jpeg { quality: 90 }).unwrap();
            assert_eq!((j.width, j.height), (120, 90));
            assert_eq!(
                image::guess_format(&j.bytes).unwrap(),
                ImageFormat::Jpeg,
                "{format:?}"
            );
        }
        // Alpha is dropped, grey becomes RGB: the artifact is always 8-bit RGB.
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, Rgba([10, 20, 30, 0])));
        let t = thumbnail(&encoded(&rgba, ImageFormat::Png), 0, Encoding::Png).unwrap();
        let back = image::load_from_memory(&t.bytes).unwrap();
        assert_eq!(back.color(), image::ColorType::Rgb8);
        assert_eq!(back.to_rgb8().get_pixel(0, 0), &Rgb([10, 20, 30]));
    }

    #[test]
    fn garbage_truncated_and_huge_images_are_typed_errors() {
        let png = encoded(&DynamicImage::ImageRgb8(gradient(64, 64)), ImageFormat::Png);
        for bytes in [
            b"<html>not found</html>".to_vec(),
            Vec::new(),
            png[..png.len() / 2].to_vec(),
        ] {
            let err = thumbnail(&bytes, 32, Encoding::Png).unwrap_err();
            assert!(matches!(err, ThumbnailError::NotAnImage(_)), "{err}");
        }
        // Decoding that would allocate more than allowed is refused as too large.
        let small = decode_within(&png, 64 * 64);
        assert!(
            matches!(small, Err(ThumbnailError::TooLarge(_))),
            "{:?}",
            small.map(|i| i.dimensions())
        );
        let enough = decode_within(&png, 64 * 64 * 3).map(|i| i.dimensions());
        assert_eq!(enough.ok(), Some((64, 64)));
    }
}
