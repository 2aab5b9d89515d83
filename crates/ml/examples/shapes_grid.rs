//! Draw a grid of synthetic shapes with their captions: `cargo run --example shapes_grid -- out.png`.

use image::{GenericImage, RgbImage};
use vlmflow_ml::data::shapes::{ShapesConfig, render_png_bytes};

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "shapes_grid.png".into());
    let config = ShapesConfig {
        seed: 0,
        image_size: 32,
        ..Default::default()
    };
    let (cols, rows, scale) = (8u32, 4u32, 4u32);
    let mut grid = RgbImage::new(cols * 32 * scale, rows * 32 * scale);
    for i in 0..cols * rows {
        let sample = config.sample(u64::from(i));
        println!("{i:2}: {}", sample.caption);
        let big = image::imageops::resize(
            &sample.image,
            32 * scale,
            32 * scale,
            image::imageops::FilterType::Nearest,
        );
        grid.copy_from(&big, (i % cols) * 32 * scale, (i / cols) * 32 * scale)
            .expect("fits");
    }
    std::fs::write(&out, render_png_bytes(&grid)).expect("write the grid");
}
