//! Data source `shapes` / `shapes:16` / `shapes:32`: a procedural Shapes3D-like set, x = 2·rgb − 1
//! for an S×S RGB render (shape (3, S, S)) of a wall, a floor and one object, drawn from six
//! discrete factors (in label order, cardinalities in brackets):
//!
//! | factor | values | what it sets |
//! |---|---|---|
//! | `floor_hue` | 10 | floor colour HSV(f/10, 1, 1) |
//! | `wall_hue` | 10 | wall colour HSV(w/10, 1, 1) |
//! | `object_hue` | 10 | object colour HSV(o/10, 1, 1) |
//! | `scale` | 4 | object half-size r = 0.12 + 0.03·scale (of the image width) |
//! | `shape` | 4 | 0 cube, 1 cylinder, 2 sphere, 3 capsule (2-D silhouettes, simply shaded) |
//! | `position` | 5 | object centre u = 0.2 + 0.15·position |
//!
//! The set is the full factor product, 10·10·10·4·4·5 = 80,000 images, example i being the
//! mixed-radix number i = ((((f·10 + w)·10 + o)·4 + scale)·4 + shape)·5 + position; nothing is
//! random (the seed is unused; [`super::Batches`] shuffles). Each image is rendered when asked
//! for.
//!
//! The scene, in unit coordinates (u, v) = ((x + ½)/S, (y + ½)/S), v downwards: the wall above
//! the horizon v < 0.6 with brightness 0.8 + 0.2·v/0.6, the floor below with brightness
//! 0.7 + 0.3·(v − 0.6)/0.4, the object standing on v = 0.88 (its centre at v = 0.88 − r). Shading
//! scales all three channels alike, so every pixel away from an edge has exactly its surface's
//! hue. Each pixel averages 4×4 sub-samples (edges are anti-aliased).

use super::{Dataset, Factor};
use crate::error::{Error, Result};

/// Cardinalities of the factors, in label order.
pub const CARDINALITIES: [usize; 6] = [10, 10, 10, 4, 4, 5];
/// Names of the factors, in label order.
pub const FACTOR_NAMES: [&str; 6] = [
    "floor_hue",
    "wall_hue",
    "object_hue",
    "scale",
    "shape",
    "position",
];
/// Number of images (the factor product).
pub const COUNT: usize = 80_000;
/// The horizon (wall above, floor below), in units of the image height.
pub const HORIZON: f64 = 0.6;
/// Where the object stands, in units of the image height.
pub const BASE: f64 = 0.88;
/// Sub-samples per pixel side.
const SUB: usize = 4;

/// The object's outline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Cube,
    Cylinder,
    Sphere,
    Capsule,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Shape::Cube, Shape::Cylinder, Shape::Sphere, Shape::Capsule];
}

/// The factors of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scene {
    pub floor_hue: usize,
    pub wall_hue: usize,
    pub object_hue: usize,
    pub scale: usize,
    pub shape: Shape,
    pub position: usize,
}

impl Scene {
    /// The scene of example `i` (< [`COUNT`]), by the mixed radix of the module docs.
    pub fn of_index(i: usize) -> Scene {
        let mut l = [0usize; 6];
        let mut r = i;
        for (f, &c) in CARDINALITIES.iter().enumerate().rev() {
            l[f] = r % c;
            r /= c;
        }
        Scene {
            floor_hue: l[0],
            wall_hue: l[1],
            object_hue: l[2],
            scale: l[3],
            shape: Shape::ALL[l[4]],
            position: l[5],
        }
    }

    /// The labels, in factor order.
    pub fn labels(&self) -> [usize; 6] {
        [
            self.floor_hue,
            self.wall_hue,
            self.object_hue,
            self.scale,
            self.shape as usize,
            self.position,
        ]
    }

    /// Object half-size r, in units of the image width.
    pub fn radius(&self) -> f64 {
        0.12 + 0.03 * self.scale as f64
    }

    /// Object centre (u, v).
    pub fn centre(&self) -> (f64, f64) {
        (0.2 + 0.15 * self.position as f64, BASE - self.radius())
    }

    /// The object's brightness at (u, v), or None outside it.
    fn object_at(&self, u: f64, v: f64) -> Option<f64> {
        let r = self.radius();
        let (cu, cv) = self.centre();
        let (dx, dy) = ((u - cu) / r, (v - cv) / r); // in units of r
        match self.shape {
            Shape::Cube => (dx.abs() <= 1.0 && dy.abs() <= 1.0).then(|| {
                // the top quarter is the lit top face, the right fifth the shaded side
                if dy < -0.5 {
                    1.0
                } else if dx > 0.6 {
                    0.6
                } else {
                    0.8
                }
            }),
            Shape::Cylinder => {
                let a = 0.8; // half-width
                let body = dx.abs() <= a && dy.abs() <= 1.0 - 0.25;
                let cap = |c: f64| (dx / a).powi(2) + ((dy - c) / 0.25).powi(2) <= 1.0;
                if cap(-0.75) {
                    Some(1.0) // the top cap, facing the light
                } else if body || cap(0.75) {
                    Some(0.5 + 0.45 * (1.0 - (dx / a).powi(2)).max(0.0).sqrt())
                } else {
                    None
                }
            }
            Shape::Sphere => {
                let q = dx * dx + dy * dy;
                (q <= 1.0).then(|| {
                    // Lambert with light from the upper left, (−0.5, −0.5, 0.707)
                    let nz = (1.0 - q).sqrt();
                    0.4 + 0.6 * (-0.5 * dx - 0.5 * dy + 0.707 * nz).max(0.0)
                })
            }
            Shape::Capsule => {
                let (a, h) = (0.6, 0.4); // radius, half-length of the axis
                let ey = dy.abs().min(h);
                let dist2 = dx * dx + (dy.abs() - ey).powi(2);
                (dist2 <= a * a).then(|| 0.5 + 0.45 * (1.0 - (dx / a).powi(2)).max(0.0).sqrt())
            }
        }
    }

    /// The colour at (u, v) in [0, 1]³.
    pub fn colour_at(&self, u: f64, v: f64) -> [f64; 3] {
        let (hue, b) = match self.object_at(u, v) {
            Some(b) => (self.object_hue, b),
            None if v < HORIZON => (self.wall_hue, 0.8 + 0.2 * v / HORIZON),
            None => (self.floor_hue, 0.7 + 0.3 * (v - HORIZON) / (1.0 - HORIZON)),
        };
        hsv(hue as f64 / 10.0).map(|c| c * b)
    }

    /// Renders the scene at `size` × `size` into `out` (3, size, size), values 2·rgb − 1.
    pub fn render(&self, size: usize, out: &mut [f32]) {
        let plane = size * size;
        let inv = 1.0 / (size * SUB) as f64;
        for y in 0..size {
            for x in 0..size {
                let mut acc = [0.0f64; 3];
                for sy in 0..SUB {
                    for sx in 0..SUB {
                        let u = ((x * SUB + sx) as f64 + 0.5) * inv;
                        let v = ((y * SUB + sy) as f64 + 0.5) * inv;
                        let c = self.colour_at(u, v);
                        for (a, c) in acc.iter_mut().zip(c) {
                            *a += c;
                        }
                    }
                }
                for (ch, a) in acc.iter().enumerate() {
                    let rgb = a / (SUB * SUB) as f64;
                    out[ch * plane + y * size + x] = (2.0 * rgb - 1.0) as f32;
                }
            }
        }
    }
}

/// HSV(h, 1, 1) as RGB in [0, 1]³, h ∈ [0, 1).
pub fn hsv(h: f64) -> [f64; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let sector = h6.floor() as usize % 6;
    let f = h6 - h6.floor();
    let (q, t) = (1.0 - f, f);
    match sector {
        0 => [1.0, t, 0.0],
        1 => [q, 1.0, 0.0],
        2 => [0.0, 1.0, t],
        3 => [0.0, q, 1.0],
        4 => [t, 0.0, 1.0],
        _ => [1.0, 0.0, q],
    }
}

/// The hue in [0, 1) of an RGB colour (0 for a grey).
pub fn hue_of(rgb: [f64; 3]) -> f64 {
    let [r, g, b] = rgb;
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let c = max - min;
    if c <= 0.0 {
        return 0.0;
    }
    let h = if max == r {
        ((g - b) / c).rem_euclid(6.0)
    } else if max == g {
        (b - r) / c + 2.0
    } else {
        (r - g) / c + 4.0
    };
    h / 6.0
}

/// The Shapes3D-like set at one size.
#[derive(Clone, Debug)]
pub struct Shapes {
    size: usize,
    factors: Vec<Factor>,
}

impl Shapes {
    /// `size` 16 or 32.
    pub fn new(size: usize) -> Result<Shapes> {
        if size != 16 && size != 32 {
            return Err(Error::config("--data", "shapes:16 or shapes:32", size));
        }
        Ok(Shapes {
            size,
            factors: FACTOR_NAMES
                .iter()
                .zip(CARDINALITIES)
                .map(|(n, c)| Factor {
                    name: n.to_string(),
                    cardinality: c,
                })
                .collect(),
        })
    }
}

impl Dataset for Shapes {
    fn name(&self) -> String {
        format!(
            "shapes:{} (procedural Shapes3D-like, {COUNT} images of factors {})",
            self.size,
            FACTOR_NAMES.join(", ")
        )
    }
    fn len(&self) -> usize {
        COUNT
    }
    fn shape(&self) -> [usize; 3] {
        [3, self.size, self.size]
    }
    fn factors(&self) -> &[Factor] {
        &self.factors
    }
    fn example(&self, i: usize, image: &mut [f32], labels: &mut [i64]) -> Result<()> {
        let d = 3 * self.size * self.size;
        if i >= COUNT {
            return Err(Error::shape("Shapes::example: index", COUNT, i));
        }
        if image.len() != d || labels.len() != 6 {
            return Err(Error::shape(
                "Shapes::example: image (3·S·S), labels (6)",
                (d, 6),
                (image.len(), labels.len()),
            ));
        }
        let scene = Scene::of_index(i);
        scene.render(self.size, image);
        for (l, v) in labels.iter_mut().zip(scene.labels()) {
            *l = v as i64;
        }
        Ok(())
    }
}
