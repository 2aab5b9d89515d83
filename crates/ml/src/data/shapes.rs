//! The procedural "shapes" dataset: one coloured shape per image, with a caption and four
//! question–answer pairs, each sample a pure function of `(seed, index)`.
//!
//! 5 shapes × 6 colours = 30 classes, two sizes kept well apart (radius ≈ 4–5 px and ≈ 9–11 px at
//! 32 px, scaled with the image), 9 positions on a 3×3 grid with a little jitter, a light tinted
//! background and slight pixel noise. Edges are antialiased by 4×4 supersampling.
//!
//! Captions vary ("a small red triangle at the top left", "a photo of a blue circle.", "a large
//! green cross in the centre") so that the zero-shot prompt of [`prompt`] is in distribution.

use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage};

use super::captions::{CaptionRecord, Qa};
use crate::rng::Rng;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word(s) used in captions and answers.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

named_enum!(Shape { Circle => "circle", Square => "square", Triangle => "triangle", Cross => "cross", Diamond => "diamond" });
named_enum!(Colour { Red => "red", Green => "green", Blue => "blue", Yellow => "yellow", Purple => "purple", Orange => "orange" });
named_enum!(Size { Small => "small", Large => "large" });
named_enum!(
    /// Cells of the 3×3 grid, row by row.
    Position {
        TopLeft => "top left", Top => "top", TopRight => "top right",
        Left => "left", Centre => "centre", Right => "right",
        BottomLeft => "bottom left", Bottom => "bottom", BottomRight => "bottom right",
    }
);
named_enum!(QaKind { Colour => "colour", Shape => "shape", Position => "position", Size => "size" });

impl Colour {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [215, 35, 35],
            Colour::Green => [35, 165, 55],
            Colour::Blue => [40, 70, 215],
            Colour::Yellow => [235, 205, 25],
            Colour::Purple => [135, 50, 175],
            Colour::Orange => [245, 130, 25],
        }
    }
}

impl Position {
    /// (column, row), each 0..3.
    pub fn cell(self) -> (usize, usize) {
        (self.index() % 3, self.index() / 3)
    }

    /// The phrase a caption uses: "at the top left", "in the centre", "on the left".
    pub fn phrase(self) -> String {
        match self {
            Position::Centre => "in the centre".into(),
            Position::Left | Position::Right => format!("on the {}", self.name()),
            _ => format!("at the {}", self.name()),
        }
    }
}

impl QaKind {
    pub fn question(self) -> &'static str {
        match self {
            QaKind::Colour => "What colour is the shape?",
            QaKind::Shape => "What shape is it?",
            QaKind::Position => "Where is the shape?",
            QaKind::Size => "How big is the shape?",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QaPair {
    pub question: String,
    pub answer: String,
    pub kind: QaKind,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub image: RgbImage,
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub position: Position,
    /// Centre of the shape in pixels (x, y) and its radius (half-extent).
    pub centre: (f32, f32),
    pub radius: f32,
    pub caption: String,
    pub qa: Vec<QaPair>,
}

pub const NUM_CLASSES: usize = 30;

/// The 30 class names "{colour} {shape}", indexed by [`class_index`].
pub fn classes() -> Vec<String> {
    let mut names = Vec::with_capacity(NUM_CLASSES);
    for shape in Shape::ALL {
        for colour in Colour::ALL {
            names.push(format!("{} {}", colour.name(), shape.name()));
        }
    }
    names
}

pub fn class_index(shape: Shape, colour: Colour) -> usize {
    shape.index() * Colour::ALL.len() + colour.index()
}

/// "a" or "an" before `word`.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The zero-shot prompt for a class: "a photo of a red circle." ("an orange …").
pub fn prompt(shape: Shape, colour: Colour) -> String {
    let c = colour.name();
    format!("a photo of {} {c} {}.", article(c), shape.name())
}

impl Sample {
    pub fn class_index(&self) -> usize {
        class_index(self.shape, self.colour)
    }

    pub fn class_name(&self) -> String {
        format!("{} {}", self.colour.name(), self.shape.name())
    }

    /// Every text of the sample (caption, questions, answers): what a tokenizer is trained on.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.caption.as_str()).chain(
            self.qa
                .iter()
                .flat_map(|qa| [qa.question.as_str(), qa.answer.as_str()]),
        )
    }

    /// The caption-file row for this sample, its image stored at `image` (relative path).
    pub fn to_record(&self, image: impl Into<String>) -> CaptionRecord {
        CaptionRecord {
            image: image.into(),
            caption: self.caption.clone(),
            label: Some(self.class_name()),
            split: None,
            qa: self
                .qa
                .iter()
                .map(|qa| Qa {
                    question: qa.question.clone(),
                    answer: qa.answer.clone(),
                    kind: Some(qa.kind.name().into()),
                })
                .collect(),
        }
    }
}

/// The generator: a seed, an image size and where shapes go. `sample(i)` depends on nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapesConfig {
    pub seed: u64,
    pub image_size: u32,
    pub placement: Placement,
}

/// Where in its grid cell a shape's centre is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Near the cell's centre (a jitter well under the grid spacing): the training default.
    #[default]
    Grid,
    /// Anywhere in the middle 80% of the cell (the shape kept inside the image): harder, for
    /// held-out questions.
    Anywhere,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        ShapesConfig {
            seed: 0,
            image_size: 32,
            placement: Placement::Grid,
        }
    }
}

impl ShapesConfig {
    pub fn sample(&self, index: u64) -> Sample {
        let mut rng = Rng::new(self.seed).fork(index);
        let shape = *rng.choose(Shape::ALL);
        let colour = *rng.choose(Colour::ALL);
        let size = *rng.choose(Size::ALL);
        let position = *rng.choose(Position::ALL);

        let s = self.image_size as f32;
        let k = s / 32.0;
        let radius = match size {
            Size::Small => rng.uniform(4.0, 5.0),
            Size::Large => rng.uniform(9.0, 11.0),
        } * k;
        // Grid centres keep the whole shape inside the image; jitter stays well under the spacing.
        // jitter <= 1.5 px (at 32 px) and <= a fifth of the grid spacing.
        let jitter = (1.5 * k).min((s - 2.0 * radius) / 12.0);
        let pad = radius + jitter;
        let spacing = (s - 2.0 * pad) / 2.0;
        let (col, row) = position.cell();
        let (cx, cy) = match self.placement {
            Placement::Grid => (
                pad + col as f32 * spacing + rng.uniform(-jitter, jitter),
                pad + row as f32 * spacing + rng.uniform(-jitter, jitter),
            ),
            Placement::Anywhere => {
                // A cell is `spacing` wide around its grid point; the centre goes anywhere in its
                // middle 80%, so that a margin between neighbours keeps every label decidable.
                let mut within = |cell: usize| {
                    let at = pad + cell as f32 * spacing;
                    let offset = rng.uniform(-0.4 * spacing, 0.4 * spacing);
                    (at + offset).clamp(radius, s - radius)
                };
                (within(col), within(row))
            }
        };

        let background = [0; 3].map(|_| rng.uniform(205.0, 250.0));
        let fill = colour
            .rgb()
            .map(|c| f32::from(c) + rng.uniform(-12.0, 12.0));
        let image = render(
            self.image_size,
            shape,
            (cx, cy),
            radius,
            fill,
            background,
            &mut rng,
        );

        let caption = caption(shape, colour, size, position, &mut rng);
        let qa = QaKind::ALL
            .iter()
            .map(|&kind| QaPair {
                question: kind.question().into(),
                answer: match kind {
                    QaKind::Colour => colour.name(),
                    QaKind::Shape => shape.name(),
                    QaKind::Position => position.name(),
                    QaKind::Size => size.name(),
                }
                .into(),
                kind,
            })
            .collect();
        Sample {
            image,
            shape,
            colour,
            size,
            position,
            centre: (cx, cy),
            radius,
            caption,
            qa,
        }
    }
}

fn caption(shape: Shape, colour: Colour, size: Size, position: Position, rng: &mut Rng) -> String {
    let mut words = Vec::with_capacity(6);
    if rng.bool(0.5) {
        words.push(size.name());
    }
    words.push(colour.name());
    words.push(shape.name());
    let photo = if rng.bool(0.35) { "a photo of " } else { "" };
    let mut text = format!("{photo}{} {}", article(words[0]), words.join(" "));
    if rng.bool(0.5) {
        text.push(' ');
        text.push_str(&position.phrase());
    }
    if rng.bool(0.5) {
        text.push('.');
    }
    text
}

/// Whether the point (dx, dy), relative to the centre, is inside `shape` of half-extent `r`.
pub fn contains(shape: Shape, dx: f32, dy: f32, r: f32) -> bool {
    match shape {
        Shape::Circle => dx * dx + dy * dy <= r * r,
        Shape::Square => dx.abs().max(dy.abs()) <= 0.85 * r,
        Shape::Diamond => dx.abs() + dy.abs() <= r,
        // Apex at (0, -r), base at y = 0.8 r spanning x in [-r, r].
        Shape::Triangle => dy >= -r && dy <= 0.8 * r && dx.abs() <= (dy + r) / 1.8,
        Shape::Cross => {
            let arm = 0.33 * r;
            (dx.abs() <= arm && dy.abs() <= r) || (dy.abs() <= arm && dx.abs() <= r)
        }
    }
}

const SUPERSAMPLE: usize = 4;

fn render(
    size: u32,
    shape: Shape,
    (cx, cy): (f32, f32),
    r: f32,
    fill: [f32; 3],
    background: [f32; 3],
    rng: &mut Rng,
) -> RgbImage {
    let noise = 3.0;
    RgbImage::from_fn(size, size, |x, y| {
        let mut covered = 0;
        // Every shape lies within `r` of its centre on both axes: skip pixels clear of that box.
        let near = (x as f32 + 0.5 - cx).abs() <= r + 1.0 && (y as f32 + 0.5 - cy).abs() <= r + 1.0;
        for sy in (0..SUPERSAMPLE).filter(|_| near) {
            for sx in 0..SUPERSAMPLE {
                let px = x as f32 + (sx as f32 + 0.5) / SUPERSAMPLE as f32;
                let py = y as f32 + (sy as f32 + 0.5) / SUPERSAMPLE as f32;
                covered += usize::from(contains(shape, px - cx, py - cy, r));
            }
        }
        let a = covered as f32 / (SUPERSAMPLE * SUPERSAMPLE) as f32;
        Rgb(std::array::from_fn(|c| {
            let v = a * fill[c] + (1.0 - a) * background[c] + noise * rng.normal_f32();
            v.round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// The image encoded as PNG (deterministic bytes).
pub fn render_png_bytes(image: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .expect("PNG encoding into memory cannot fail");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn same_seed_and_index_give_identical_samples() {
        let cfg = ShapesConfig {
            seed: 5,
            image_size: 32,
            ..Default::default()
        };
        let (a, b) = (cfg.sample(17), cfg.sample(17));
        assert_eq!(a.image.as_raw(), b.image.as_raw());
        assert_eq!(a.caption, b.caption);
        assert_eq!(render_png_bytes(&a.image), render_png_bytes(&b.image));
        assert_ne!(cfg.sample(18).image.as_raw(), a.image.as_raw());
        let other_seed = ShapesConfig { seed: 6, ..cfg };
        assert_ne!(other_seed.sample(17).image.as_raw(), a.image.as_raw());
    }

    #[test]
    fn two_thousand_samples_cover_every_class_size_and_position() {
        let cfg = ShapesConfig::default();
        let (mut classes_seen, mut sizes, mut positions) =
            (HashSet::new(), HashSet::new(), HashSet::new());
        let mut photo_prefixed = 0;
        for i in 0..2000 {
            let s = cfg.sample(i);
            classes_seen.insert(s.class_index());
            sizes.insert(s.size);
            positions.insert(s.position);
            photo_prefixed += usize::from(s.caption.starts_with("a photo of"));
            assert!(s.caption.contains(&s.class_name()), "{}", s.caption);
            assert_eq!(s.qa.len(), 4);
        }
        assert_eq!(classes_seen.len(), NUM_CLASSES);
        assert_eq!(sizes.len(), 2);
        assert_eq!(positions.len(), 9);
        assert!((500..900).contains(&photo_prefixed), "{photo_prefixed}");
    }

    #[test]
    fn anywhere_spreads_centres_over_the_cell_keeping_labels_decidable() {
        for image_size in [32, 64, 96] {
            let spread = |placement| {
                let cfg = ShapesConfig {
                    seed: 3,
                    image_size,
                    placement,
                };
                let mut widest: f32 = 0.0;
                for i in 0..500 {
                    let moved = cfg.sample(i);
                    let (cx, cy) = moved.centre;
                    let s = image_size as f32;
                    assert!(cx - moved.radius >= 0.0 && cx + moved.radius <= s);
                    assert!(cy - moved.radius >= 0.0 && cy + moved.radius <= s);
                    // The labelled cell is the one whose grid point is nearest.
                    let (col, row) = moved.position.cell();
                    let k = s / 32.0;
                    let jitter = (1.5 * k).min((s - 2.0 * moved.radius) / 12.0);
                    let pad = moved.radius + jitter;
                    let spacing = (s - 2.0 * pad) / 2.0;
                    let nearest = |c: f32| ((c - pad) / spacing).round() as usize;
                    assert_eq!(
                        (nearest(cx), nearest(cy)),
                        (col, row),
                        "sample {i} at {image_size}"
                    );
                    let off = (cx - (pad + col as f32 * spacing)).abs() / spacing;
                    widest = widest.max(off);
                }
                widest
            };
            assert!(spread(Placement::Grid) <= 0.21);
            let anywhere = spread(Placement::Anywhere);
            assert!((0.35..=0.4).contains(&anywhere), "{anywhere}");
        }
    }

    #[test]
    fn a_shapes_pixels_are_mostly_its_colour() {
        for image_size in [32, 64] {
            let cfg = ShapesConfig {
                seed: 1,
                image_size,
                ..Default::default()
            };
            for i in 0..200 {
                let s = cfg.sample(i);
                let (cx, cy) = s.centre;
                assert!(cx - s.radius >= 0.0 && cx + s.radius <= image_size as f32);
                assert!(cy - s.radius >= 0.0 && cy + s.radius <= image_size as f32);
                let target = s.colour.rgb();
                let (mut inside, mut close) = (0, 0);
                for (x, y, p) in s.image.enumerate_pixels() {
                    // Pixels whose whole square lies inside the shape.
                    let corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)];
                    if corners.iter().all(|(ox, oy)| {
                        contains(s.shape, x as f32 + ox - cx, y as f32 + oy - cy, s.radius)
                    }) {
                        inside += 1;
                        let dist = (0..3)
                            .map(|c| (i32::from(p[c]) - i32::from(target[c])).abs())
                            .max()
                            .unwrap();
                        close += usize::from(dist <= 25);
                    }
                }
                assert!(inside >= 4, "sample {i}: only {inside} inner pixels");
                assert!(close * 10 >= inside * 9, "sample {i}: {close}/{inside}");
            }
        }
    }

    #[test]
    fn classes_prompts_and_answers() {
        let names = classes();
        assert_eq!(names.len(), NUM_CLASSES);
        assert_eq!(
            names[class_index(Shape::Triangle, Colour::Blue)],
            "blue triangle"
        );
        assert_eq!(
            prompt(Shape::Circle, Colour::Red),
            "a photo of a red circle."
        );
        assert_eq!(
            prompt(Shape::Cross, Colour::Orange),
            "a photo of an orange cross."
        );
        let s = ShapesConfig::default().sample(3);
        let answers: Vec<_> = s.qa.iter().map(|q| (q.kind, q.answer.as_str())).collect();
        assert_eq!(
            answers,
            vec![
                (QaKind::Colour, s.colour.name()),
                (QaKind::Shape, s.shape.name()),
                (QaKind::Position, s.position.name()),
                (QaKind::Size, s.size.name()),
            ]
        );
        assert_eq!(s.texts().count(), 9);
        assert_eq!(Position::TopLeft.phrase(), "at the top left");
        assert_eq!(Position::Centre.phrase(), "in the centre");
    }

    #[test]
    fn png_round_trips() {
        let s = ShapesConfig::default().sample(0);
        let bytes = render_png_bytes(&s.image);
        let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(back.as_raw(), s.image.as_raw());
    }
}
