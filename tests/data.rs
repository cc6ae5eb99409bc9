//! Training data sources (`--data`): the minibatch order, the spec's parse, and each source's
//! content (digits' counts and checksum, shapes' factors read back from the pixels, gmm's
//! draws and config refusals, folder's PNG decoding, resizing and refusals).

use std::path::{Path, PathBuf};

use infodiff::app::data::{open_data, open_data_sized};
use infodiff::data::shapes::{self, Scene, Shapes};
use infodiff::data::{Batches, DataSpec, Dataset, digits, folder};

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("infodiff-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn example(d: &dyn Dataset, i: usize) -> (Vec<f32>, Vec<i64>) {
    let n: usize = d.shape().iter().product();
    let (mut x, mut l) = (vec![0.0; n], vec![0; d.factors().len()]);
    d.example(i, &mut x, &mut l).unwrap();
    (x, l)
}

// ---- Batches ---------------------------------------------------------------------------------

#[test]
fn batches_visit_every_example_once_per_epoch_deterministically() {
    for len in [1usize, 2, 37, 1000] {
        let b = Batches { len, seed: 11 };
        let mut epochs = vec![];
        for e in 0..4 {
            let p = b.epoch(e);
            let mut s = p.clone();
            s.sort();
            assert_eq!(s, (0..len).collect::<Vec<_>>(), "len {len} epoch {e}");
            epochs.push(p);
        }
        // minibatches (of a size that does not divide len) read the epochs end to end
        let bs = 7;
        let all: Vec<usize> = epochs.concat();
        for step in 0..(3 * len / bs) as u64 {
            let got = b.indices(step, bs);
            let at = step as usize * bs;
            assert_eq!(got, all[at..at + bs], "len {len} step {step}");
        }
        // the same on a fresh value (no state) and on another thread
        let again = Batches { len, seed: 11 };
        assert_eq!(again.indices(5, 3), b.indices(5, 3));
        let on_thread = std::thread::spawn(move || again.indices(9, 4))
            .join()
            .unwrap();
        assert_eq!(on_thread, b.indices(9, 4));
        if len >= 37 {
            assert_ne!(epochs[0], epochs[1], "len {len}: epochs differ");
            assert_ne!(epochs[1], epochs[2], "len {len}: epochs differ");
            assert_ne!(
                b.epoch(0),
                Batches { len, seed: 12 }.epoch(0),
                "seeds differ"
            );
            assert_ne!(epochs[0], (0..len).collect::<Vec<_>>(), "shuffled");
        }
    }
    assert!(Batches { len: 0, seed: 0 }.indices(3, 8).is_empty());
    assert!(Batches { len: 5, seed: 0 }.indices(3, 0).is_empty());
}

#[test]
fn batches_shuffle_is_roughly_uniform() {
    // Position of example 0 over 2,000 epochs of 10: each position about 200 times; a
    // count beyond 200 ± 60 (≈ 4.7 binomial standard deviations, √(2000·0.1·0.9) = 13.4) would
    // mean a biased shuffle.
    let b = Batches { len: 10, seed: 5 };
    let mut count = [0usize; 10];
    for e in 0..2000 {
        let p = b.epoch(e);
        count[p.iter().position(|&i| i == 0).unwrap()] += 1;
    }
    for c in count {
        assert!((140..=260).contains(&c), "{count:?}");
    }
}

// ---- DataSpec --------------------------------------------------------------------------------

#[test]
fn data_specs_parse_and_bad_ones_are_named() {
    let p = |s: &str| s.parse::<DataSpec>();
    assert_eq!(p("digits").unwrap(), DataSpec::Digits);
    assert_eq!(p("shapes").unwrap(), DataSpec::Shapes { size: 16 });
    assert_eq!(p("shapes:16").unwrap(), DataSpec::Shapes { size: 16 });
    assert_eq!(p("shapes:32").unwrap(), DataSpec::Shapes { size: 32 });
    assert_eq!(p("gmm:a/b.json").unwrap(), DataSpec::Gmm("a/b.json".into()));
    assert_eq!(p("folder:/x/y").unwrap(), DataSpec::Folder("/x/y".into()));
    for bad in ["digit", "shapes:24", "", "mnist"] {
        let e = p(bad).unwrap_err().to_string();
        assert!(
            e.contains("`--data`") && e.contains("folder:DIR"),
            "{bad}: {e}"
        );
    }
}

// ---- digits ----------------------------------------------------------------------------------

#[test]
fn digits_match_scikit_learns_counts_and_the_committed_checksum() {
    let d = open_data(&DataSpec::Digits, 0).unwrap();
    assert_eq!((d.len(), d.shape()), (1797, [1, 8, 8]));
    assert_eq!(d.factors()[0].name, "class");
    assert_eq!(d.factors()[0].cardinality, 10);
    assert_eq!(
        digits::fnv1a64(digits::Digits::records()),
        digits::FNV1A64,
        "src/data/digits.u8 differs from the file make_digits.py wrote"
    );
    let mut counts = [0usize; 10];
    for i in 0..d.len() {
        let (x, l) = example(d.as_ref(), i);
        counts[l[0] as usize] += 1;
        // v/8 − 1 for v in 0..=16: exact multiples of 1/8 in [−1, 1]
        assert!(
            x.iter()
                .all(|v| (-1.0..=1.0).contains(v) && (v * 8.0).fract() == 0.0)
        );
    }
    assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    assert_eq!(counts, digits::CLASS_COUNTS);
    // sklearn's first image (a 0): its top row is 0 0 5 13 9 1 0 0
    let (x, l) = example(d.as_ref(), 0);
    assert_eq!(l, [0]);
    let row: Vec<f32> = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]
        .iter()
        .map(|v: &f32| v / 8.0 - 1.0)
        .collect();
    assert_eq!(&x[..8], &row[..]);
    let mut bad = vec![0.0; 63];
    assert!(d.example(0, &mut bad, &mut [0]).is_err());
    assert!(d.example(1797, &mut [0.0; 64], &mut [0]).is_err());
}

// ---- shapes ----------------------------------------------------------------------------------

/// The RGB in [0, 1] of pixel (x, y) of a (3, S, S) image.
fn rgb(img: &[f32], s: usize, x: usize, y: usize) -> [f64; 3] {
    [0, 1, 2].map(|c| (img[c * s * s + y * s + x] as f64 + 1.0) / 2.0)
}

/// The hue label (0..10) nearest to a pixel's hue.
fn hue_label(c: [f64; 3]) -> usize {
    (shapes::hue_of(c) * 10.0).round() as usize % 10
}

#[test]
fn shapes_labels_are_the_factors_the_pixels_show() {
    for size in [16usize, 32] {
        let d = open_data(&DataSpec::Shapes { size }, 0).unwrap();
        assert_eq!((d.len(), d.shape()), (80_000, [3, size, size]));
        let names: Vec<&str> = d.factors().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, shapes::FACTOR_NAMES);
        let card: Vec<usize> = d.factors().iter().map(|f| f.cardinality).collect();
        assert_eq!(card, shapes::CARDINALITIES);
        // an odd stride through the product visits every value of every factor
        for i in (0..80_000).step_by(997) {
            let (x, l) = example(d.as_ref(), i);
            assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
            let scene = Scene::of_index(i);
            assert_eq!(
                l,
                scene.labels().map(|v| v as i64),
                "labels are the scene's factors"
            );
            // floor: the bottom-left pixel; wall: the top-left; object: its centre pixel
            assert_eq!(hue_label(rgb(&x, size, 0, size - 1)), l[0] as usize, "{i}");
            assert_eq!(hue_label(rgb(&x, size, 0, 0)), l[1] as usize, "{i}");
            let (cu, cv) = scene.centre();
            let (px, py) = ((cu * size as f64) as usize, (cv * size as f64) as usize);
            assert_eq!(hue_label(rgb(&x, size, px, py)), l[2] as usize, "{i}");
        }
        // the same image twice
        assert_eq!(example(d.as_ref(), 12_345), example(d.as_ref(), 12_345));
    }
}

#[test]
fn shapes_scale_and_position_move_the_object() {
    let s = 32;
    // floor hue 0, wall hue 3, object hue 6: object pixels are those of hue 0.6
    let object_pixels = |scale: usize, shape: usize, position: usize| {
        let i = (((6 + 30) * 4 + scale) * 4 + shape) * 5 + position;
        let scene = Scene::of_index(i);
        assert_eq!(
            (scene.floor_hue, scene.wall_hue, scene.object_hue),
            (0, 3, 6)
        );
        assert_eq!(
            (scene.scale, scene.shape as usize, scene.position),
            (scale, shape, position)
        );
        let mut img = vec![0.0f32; 3 * s * s];
        scene.render(s, &mut img);
        let mut xs = vec![];
        for y in 0..s {
            for x in 0..s {
                if hue_label(rgb(&img, s, x, y)) == 6 {
                    xs.push(x as f64);
                }
            }
        }
        (xs.len(), xs.iter().sum::<f64>() / xs.len() as f64)
    };
    for shape in 0..4 {
        let areas: Vec<usize> = (0..4).map(|sc| object_pixels(sc, shape, 2).0).collect();
        assert!(
            areas.windows(2).all(|w| w[0] < w[1]),
            "shape {shape}: {areas:?}"
        );
        let cols: Vec<f64> = (0..5).map(|p| object_pixels(1, shape, p).1).collect();
        assert!(
            cols.windows(2).all(|w| w[0] + 3.0 < w[1]),
            "shape {shape}: {cols:?}"
        );
    }
    // the four shapes differ in outline at one scale and position
    let a: Vec<usize> = (0..4).map(|sh| object_pixels(3, sh, 2).0).collect();
    for i in 0..4 {
        for j in 0..i {
            assert_ne!(a[i], a[j], "{a:?}");
        }
    }
    assert!(Shapes::new(24).is_err());
}

// ---- gmm -------------------------------------------------------------------------------------

const GMM: &str = r#"{
  "mixture": {"components": [
    {"weight": 3, "mean": [1, 2, 3, 4], "var": 0.01, "class": 0},
    {"weight": 1, "mean": [-1, -2, -3, -4], "var": [0.04, 0, 0.04, 0], "class": 1}
  ]},
  "image": [1, 2, 2], "train_examples": 4000
}"#;

#[test]
fn gmm_draws_the_mixture_shaped_by_image() {
    let dir = tempdir("gmm");
    let f = dir.join("m.json");
    std::fs::write(&f, GMM).unwrap();
    // the measure config reader takes (and otherwise ignores) image and train_examples
    let cfg = infodiff::app::Config::from_json_str(GMM, "m.json").unwrap();
    assert_eq!(
        (cfg.image, cfg.train_examples),
        (Some([1, 2, 2]), Some(4000))
    );
    assert_eq!(
        infodiff::app::Config::from_value(&cfg.to_json()).unwrap(),
        cfg
    );
    let d = open_data(&DataSpec::Gmm(f.clone()), 7).unwrap();
    assert_eq!((d.len(), d.shape()), (4000, [1, 2, 2]));
    assert_eq!(d.factors()[0].cardinality, 2);
    let mut n = [0usize; 2];
    let mut sum = [[0.0f64; 4]; 2];
    for i in 0..d.len() {
        let (x, l) = example(d.as_ref(), i);
        let c = l[0] as usize;
        n[c] += 1;
        for j in 0..4 {
            sum[c][j] += x[j] as f64;
        }
        if c == 1 {
            // zero variance in coordinates 1 and 3: exactly the mean
            assert_eq!((x[1], x[3]), (-2.0, -4.0));
        }
    }
    // weights 3 : 1 — 3000 ± 110 (4 binomial sd, √(4000·0.75·0.25) = 27) of class 0
    assert!((n[0] as i64 - 3000).abs() < 110, "{n:?}");
    // class means within 5 standard errors (sd ≤ 0.2, n ≥ 900: 5·0.2/30 = 0.033)
    let means = [[1.0, 2.0, 3.0, 4.0], [-1.0, -2.0, -3.0, -4.0]];
    for c in 0..2 {
        for j in 0..4 {
            let m = sum[c][j] / n[c] as f64;
            assert!((m - means[c][j]).abs() < 0.034, "class {c} coord {j}: {m}");
        }
    }
    // deterministic given the seed; another seed draws differently
    let again = open_data(&DataSpec::Gmm(f.clone()), 7).unwrap();
    assert_eq!(example(again.as_ref(), 123), example(d.as_ref(), 123));
    let other = open_data(&DataSpec::Gmm(f.clone()), 8).unwrap();
    assert_ne!(example(other.as_ref(), 123).0, example(d.as_ref(), 123).0);
}

#[test]
fn gmm_refuses_an_image_shape_that_is_not_the_mixtures_dimension() {
    let dir = tempdir("gmm-bad");
    for (text, needle) in [
        (GMM.replace("[1, 2, 2]", "[3, 2, 2]"), "C·H·W = 4"),
        (GMM.replace("[1, 2, 2]", "[1, 0, 4]"), "`image[1]`"),
        (GMM.replace("[1, 2, 2]", "[4, 1]"), "`image`"),
        (
            GMM.replace(r#""image": [1, 2, 2],"#, ""),
            "nothing (missing)",
        ),
        (GMM.replace("4000", "0"), "`train_examples`"),
    ] {
        let f = dir.join("m.json");
        std::fs::write(&f, &text).unwrap();
        let e = open_data(&DataSpec::Gmm(f), 0).err().unwrap().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
        if needle.contains("C·H·W") || needle.contains("missing") {
            assert!(e.contains("`image`"), "{e}");
        }
    }
    let e = open_data(&DataSpec::Gmm(dir.join("nope.json")), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nope.json"), "{e}");
}

// ---- folder ----------------------------------------------------------------------------------

/// Writes a PNG of `w`×`h` with `color`/`depth` and raw sample bytes `data`.
fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<&[u8]>,
) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    if let Some(p) = palette {
        enc.set_palette(p.to_vec());
    }
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(data).unwrap();
}

#[test]
fn folder_decodes_every_png_kind_into_sorted_classes() {
    use png::{BitDepth as B, ColorType as C};
    let dir = tempdir("folder");
    for c in ["b_cats", "a_dogs", ".hidden"] {
        std::fs::create_dir(dir.join(c)).unwrap();
    }
    std::fs::write(dir.join("README.txt"), "not a class").unwrap();
    let (w, h) = (3u32, 2u32);
    // a_dogs (class 0): 8-bit grey, 16-bit grey + alpha
    write_png(
        &dir.join("a_dogs/1.png"),
        w,
        h,
        C::Grayscale,
        B::Eight,
        &[0, 51, 102, 153, 204, 255],
        None,
    );
    let ga16: Vec<u8> = (0..6u16)
        .flat_map(|i| {
            let v = i * 13107; // i/5 of 65535
            [(v >> 8) as u8, v as u8, 0xff, 0xff]
        })
        .collect();
    write_png(
        &dir.join("a_dogs/2.PNG"),
        w,
        h,
        C::GrayscaleAlpha,
        B::Sixteen,
        &ga16,
        None,
    );
    std::fs::write(dir.join("a_dogs/notes.txt"), "skipped").unwrap();
    // b_cats (class 1): RGB 8-bit, RGBA 8-bit, palette
    let rgb: Vec<u8> = (0..18).map(|i| (i * 15) as u8).collect();
    write_png(
        &dir.join("b_cats/x.png"),
        w,
        h,
        C::Rgb,
        B::Eight,
        &rgb,
        None,
    );
    let rgba: Vec<u8> = (0..6).flat_map(|i| [255, 0, (i * 51) as u8, 7]).collect();
    write_png(
        &dir.join("b_cats/y.png"),
        w,
        h,
        C::Rgba,
        B::Eight,
        &rgba,
        None,
    );
    let pal = [255u8, 0, 0, 0, 255, 0]; // red, green
    write_png(
        &dir.join("b_cats/z.png"),
        w,
        h,
        C::Indexed,
        B::Eight,
        &[0, 1, 0, 1, 0, 1],
        Some(&pal),
    );

    let d = open_data(&DataSpec::Folder(dir.clone()), 0).unwrap();
    assert_eq!(
        (d.len(), d.shape()),
        (5, [3, 2, 3]),
        "RGB present: 3 channels"
    );
    assert_eq!(d.factors()[0].cardinality, 2);
    let q = |v: f64| (2.0 * v - 1.0) as f32;
    // grey 8-bit, repeated in R = G = B
    let (x, l) = example(d.as_ref(), 0);
    assert_eq!(l, [0]);
    for c in 0..3 {
        let want: Vec<f32> = [0, 51, 102, 153, 204, 255]
            .iter()
            .map(|&v| q(v as f64 / 255.0))
            .collect();
        assert_eq!(&x[c * 6..(c + 1) * 6], &want[..]);
    }
    // 16-bit grey + alpha: alpha dropped
    let (x, l) = example(d.as_ref(), 1);
    assert_eq!(l, [0]);
    let want: Vec<f32> = (0..6).map(|i| q((i * 13107) as f64 / 65535.0)).collect();
    assert_eq!(&x[..6], &want[..]);
    // RGB: channel-major
    let (x, l) = example(d.as_ref(), 2);
    assert_eq!(l, [1]);
    assert_eq!(x[0], q(0.0)); // R of pixel 0
    assert_eq!(x[6], q(15.0 / 255.0)); // G of pixel 0
    assert_eq!(x[12 + 5], q(255.0 * (17.0 / 17.0) / 255.0)); // B of pixel 5 = 17·15
    let (x, _) = example(d.as_ref(), 3); // RGBA
    assert_eq!((x[0], x[6], x[12 + 5]), (1.0, -1.0, 1.0));
    let (x, _) = example(d.as_ref(), 4); // palette: red, green, red, …
    assert_eq!((x[0], x[6], x[1], x[7]), (1.0, -1.0, -1.0, 1.0));

    // all grey: one channel
    let grey = tempdir("folder-grey");
    std::fs::create_dir(grey.join("only")).unwrap();
    write_png(
        &grey.join("only/a.png"),
        2,
        2,
        C::Grayscale,
        B::Eight,
        &[0, 255, 255, 0],
        None,
    );
    let g = open_data(&DataSpec::Folder(grey), 0).unwrap();
    assert_eq!(g.shape(), [1, 2, 2]);
    assert_eq!(example(g.as_ref(), 0).0, [-1.0, 1.0, 1.0, -1.0]);
}

#[test]
fn folder_resizes_with_box_and_bilinear_filters() {
    use png::{BitDepth as B, ColorType as C};
    let dir = tempdir("folder-resize");
    std::fs::create_dir(dir.join("c")).unwrap();
    // 4×4 grey, then a 2×2 one: sizes differ
    let px: Vec<u8> = (0..16).map(|i| (i * 17) as u8).collect();
    write_png(
        &dir.join("c/a.png"),
        4,
        4,
        C::Grayscale,
        B::Eight,
        &px,
        None,
    );
    write_png(
        &dir.join("c/b.png"),
        2,
        2,
        C::Grayscale,
        B::Eight,
        &[0, 255, 255, 0],
        None,
    );
    let e = open_data(&DataSpec::Folder(dir.clone()), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("b.png") && e.contains("a.png") && e.contains("2×2"),
        "{e}"
    );
    let d = open_data_sized(&DataSpec::Folder(dir.clone()), 0, Some(2)).unwrap();
    assert_eq!(d.shape(), [1, 2, 2]);
    // box 4 → 2: each output the mean of a 2×2 block; values i·17/255 = i/15
    let (x, _) = example(d.as_ref(), 0);
    let block = |i0: usize| {
        let v = [i0, i0 + 1, i0 + 4, i0 + 5].iter().sum::<usize>() as f64 / 4.0 / 15.0;
        (2.0 * v - 1.0) as f32
    };
    for (got, want) in x.iter().zip([block(0), block(2), block(8), block(10)]) {
        assert!((got - want).abs() < 1e-6, "{x:?}"); // f64 sums rounded once to f32
    }
    // 2 → 2 unchanged
    assert_eq!(example(d.as_ref(), 1).0, [-1.0, 1.0, 1.0, -1.0]);
    // bilinear 2 → 4 along one axis: half-pixel centres at −0.25, 0.25, 0.75, 1.25 → clamped
    let w = folder::resample_weights(2, 4);
    let at = |j: usize| w[j].iter().map(|&(i, a)| a * [0.0, 1.0][i]).sum::<f64>();
    assert_eq!([at(0), at(1), at(2), at(3)], [0.0, 0.25, 0.75, 1.0]);
    // box 3 → 2: output 0 covers inputs [0, 1.5)
    let w = folder::resample_weights(3, 2);
    assert_eq!(w[0], vec![(0, 2.0 / 3.0), (1, 1.0 / 3.0)]);
    for ws in folder::resample_weights(7, 3)
        .iter()
        .chain(&folder::resample_weights(3, 7))
    {
        assert!((ws.iter().map(|p| p.1).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn folder_refusals_name_the_folder_or_file() {
    use png::{BitDepth as B, ColorType as C};
    let empty = tempdir("folder-empty");
    let e = open_data(&DataSpec::Folder(empty.clone()), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&empty.display().to_string()) && e.contains("no class subfolder"),
        "{e}"
    );
    std::fs::create_dir(empty.join("k")).unwrap();
    std::fs::write(empty.join("k/a.txt"), "x").unwrap();
    let e = open_data(&DataSpec::Folder(empty.clone()), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no .png file") && e.contains("k"), "{e}");
    let missing = empty.join("nowhere");
    let e = open_data(&DataSpec::Folder(missing), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
    // an unreadable PNG is named
    let bad = tempdir("folder-bad");
    std::fs::create_dir(bad.join("k")).unwrap();
    write_png(
        &bad.join("k/good.png"),
        1,
        1,
        C::Grayscale,
        B::Eight,
        &[9],
        None,
    );
    std::fs::write(bad.join("k/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let err = open_data(&DataSpec::Folder(bad.clone()), 0).err().unwrap();
    let e = err.to_string();
    assert!(e.contains("broken.png") && e.contains("a PNG image"), "{e}");
    assert!(err.is_bad_input());
}

#[test]
fn open_data_opens_every_source() {
    let dir = tempdir("open-all");
    std::fs::write(dir.join("m.json"), GMM).unwrap();
    std::fs::create_dir(dir.join("cls")).unwrap();
    write_png(
        &dir.join("cls/a.png"),
        2,
        2,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &[0; 12],
        None,
    );
    let specs = [
        (format!("gmm:{}", dir.join("m.json").display()), [1, 2, 2]),
        ("digits".into(), [1, 8, 8]),
        ("shapes:32".into(), [3, 32, 32]),
        (format!("folder:{}", dir.join("").display()), [3, 2, 2]),
    ];
    for (s, shape) in specs {
        let spec: DataSpec = s.parse().unwrap();
        let d = open_data(&spec, 1).unwrap();
        assert_eq!(d.shape(), shape, "{s}");
        assert!(!d.is_empty() && !d.name().is_empty(), "{s}");
        let (x, l) = example(d.as_ref(), d.len() - 1);
        assert!(
            x.iter().all(|v| v.is_finite()) && l.iter().all(|&v| v >= 0),
            "{s}"
        );
    }
    // open_builtin leaves gmm to the config reader
    assert!(infodiff::data::open_builtin(&DataSpec::Gmm("x.json".into()), 0).is_err());
}
