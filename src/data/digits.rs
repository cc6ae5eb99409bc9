//! Data source `digits`: x = v/8 − 1 for the 64 pixel values v ∈ 0..=16 of each of the 1,797
//! 8×8 UCI handwritten digits, shape (1, 8, 8), one factor `class` (the digit, 10 values).
//!
//! Provenance: the images are scikit-learn's copy (`sklearn.datasets.load_digits()`,
//! sklearn/datasets/data/digits.csv.gz) of the test part of the UCI "Optical Recognition of
//! Handwritten Digits" data set (E. Alpaydin, C. Kaynak, 1998; licence CC BY 4.0,
//! <https://doi.org/10.24432/C50P49>), extracted by `src/data/make_digits.py` (scikit-learn
//! 1.9.1) into `src/data/digits.u8` and compiled in: 1,797 records of 65 bytes in sklearn's
//! order, the 64 pixels row-major then the label. See `src/data/DIGITS.md`.

use super::{Dataset, Factor};
use crate::error::{Error, Result};

/// The committed records (1,797 × 65 bytes).
static RECORDS: &[u8] = include_bytes!("digits.u8");

/// Number of images.
pub const COUNT: usize = 1797;
/// Bytes of one record: 64 pixels and the label.
const RECORD: usize = 65;
/// Pixels of one image (8 × 8).
pub const PIXELS: usize = 64;
/// Images of each digit 0..9 in the set (as scikit-learn counts them).
pub const CLASS_COUNTS: [usize; 10] = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];
/// FNV-1a 64-bit hash of `digits.u8` (printed by make_digits.py).
pub const FNV1A64: u64 = 0x7768_69cc_e379_5967;

/// FNV-1a, 64-bit: the checksum of the committed file.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The 1,797 digits.
#[derive(Clone, Debug)]
pub struct Digits {
    factors: Vec<Factor>,
}

impl Digits {
    /// Checks the compiled-in records (size, value ranges).
    pub fn new() -> Result<Digits> {
        let bad = |found: String| Error::Model {
            path: "src/data/digits.u8 (compiled in)".into(),
            tensor: String::new(),
            expected: format!("{COUNT} records of 64 pixels in 0..=16 and a label in 0..=9"),
            found,
        };
        if RECORDS.len() != COUNT * RECORD {
            return Err(bad(format!("{} bytes", RECORDS.len())));
        }
        for (i, r) in RECORDS.chunks(RECORD).enumerate() {
            if r[..PIXELS].iter().any(|&v| v > 16) || r[PIXELS] > 9 {
                return Err(bad(format!("record {i} out of range")));
            }
        }
        Ok(Digits {
            factors: vec![Factor {
                name: "class".into(),
                cardinality: 10,
            }],
        })
    }

    /// The raw records (1,797 × (64 pixels, label)).
    pub fn records() -> &'static [u8] {
        RECORDS
    }

    /// The label of image `i`.
    pub fn label(i: usize) -> Option<usize> {
        RECORDS.get(i * RECORD + PIXELS).map(|&l| l as usize)
    }
}

impl Dataset for Digits {
    fn name(&self) -> String {
        "digits (1,797 UCI 8×8 handwritten digits, via scikit-learn; CC BY 4.0)".into()
    }
    fn len(&self) -> usize {
        COUNT
    }
    fn shape(&self) -> [usize; 3] {
        [1, 8, 8]
    }
    fn factors(&self) -> &[Factor] {
        &self.factors
    }
    fn example(&self, i: usize, image: &mut [f32], labels: &mut [i64]) -> Result<()> {
        if i >= COUNT {
            return Err(Error::shape("Digits::example: index", COUNT, i));
        }
        if image.len() != PIXELS || labels.len() != 1 {
            return Err(Error::shape(
                "Digits::example: image (64), labels (1)",
                (PIXELS, 1),
                (image.len(), labels.len()),
            ));
        }
        let r = &RECORDS[i * RECORD..(i + 1) * RECORD];
        for (o, &v) in image.iter_mut().zip(&r[..PIXELS]) {
            *o = v as f32 / 8.0 - 1.0;
        }
        labels[0] = r[PIXELS] as i64;
        Ok(())
    }
}
