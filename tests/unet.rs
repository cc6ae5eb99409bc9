//! The U-Net against diffusers: every case in ../shared/fixtures/unet (reference computed in
//! float64) matched to relative L2 error ≤ 1e-4.

use std::path::PathBuf;

use infodiff::nn::Weights;
use infodiff::nn::unet::UNet;
use infodiff::tensor::Tensor;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/unet")
}

#[test]
fn unet_matches_diffusers_on_every_fixture() {
    let root = fixtures();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("fixtures at {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("io.safetensors").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 2, "fixture cases in {}", root.display());
    for case in cases {
        let net = UNet::load(&case).unwrap();
        let io = Weights::load(&case.join("io.safetensors")).unwrap();
        let x: &Tensor = &io.tensors["sample"];
        let t = &io.tensors["timestep"].data;
        let labels = io.ints.get("class_labels").map(|(_, v)| v.as_slice());
        let want = &io.tensors["out"];
        let got = net.forward(x, t, labels).unwrap();
        assert_eq!(got.shape, want.shape);
        let num: f64 = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum();
        let den: f64 = want.data.iter().map(|b| (*b as f64).powi(2)).sum();
        let rel = (num / den).sqrt();
        eprintln!("{}: relative L2 error {rel:.3e}", case.display());
        // issue: ≤ 1e-4 relative L2 against the float64 reference
        assert!(rel <= 1e-4, "{}: relative L2 error {rel:e}", case.display());
    }
}
