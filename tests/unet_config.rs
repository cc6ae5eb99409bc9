//! UNetConfig written back as diffusers' config.json ([`UNetConfig::to_json`]) and read again,
//! and infodiff's multi-factor conditioning (`infodiff_factors`): parsing, refusals naming the
//! key, the tables expected, and the forward (one factor is the plain class-conditional net bit
//! for bit; two factors are the plain net whose table rows are the sums).

mod common;
use common::rel_l2;
use std::collections::HashMap;
use std::path::PathBuf;

use infodiff::nn::Weights;
use infodiff::nn::unet::{UNet, UNetConfig, expected_tensors};
use infodiff::tensor::Tensor;
use serde_json::{Value, json};

/// Every config.json under tests/fixtures (UNet2DModel ones, saved by diffusers), sorted.
fn fixture_configs() -> Vec<PathBuf> {
    fn walk(d: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "config.json") {
                out.push(p);
            }
        }
    }
    let mut out = vec![];
    walk(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &mut out,
    );
    out.sort();
    out
}

fn read_json(p: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// A small config (two levels, attention at the second, 4 groups), class-conditional with 5
/// classes; `edit` changes it.
fn tiny(edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = json!({
        "_class_name": "UNet2DModel",
        "block_out_channels": [8, 16],
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "attention_head_dim": 4,
        "sample_size": 8,
        "num_class_embeds": 5,
    });
    edit(&mut v);
    v
}

/// The multi-factor config of `factors` ((name, values) pairs) on [`tiny`].
fn factored(factors: &[(&str, usize)]) -> Value {
    tiny(|v| {
        let m = v.as_object_mut().unwrap();
        m.remove("num_class_embeds");
        m.insert(
            "infodiff_factors".into(),
            factors
                .iter()
                .map(|(n, k)| json!({"name": n, "values": k}))
                .collect(),
        );
    })
}

fn round_trip(c: &UNetConfig) {
    let back = UNetConfig::from_json(&c.to_json()).unwrap();
    assert_eq!(&back, c);
}

#[test]
fn to_json_round_trips_ddpm_cifar10_with_every_key_diffusers_saves() {
    let c = UNetConfig::ddpm_cifar10();
    round_trip(&c);
    let v = c.to_json();
    // The keys diffusers 0.42.1 saves for a UNet2DModel, in its (sorted) order: those of every
    // fixture config, which diffusers wrote.
    let fixture = read_json(&fixture_configs()[0]);
    assert_eq!(keys(&v), keys(&fixture));
    assert_eq!(v["_class_name"], "UNet2DModel");
    assert_eq!(v["_diffusers_version"], "0.42.1");
    assert_eq!(
        v["down_block_types"],
        json!([
            "DownBlock2D",
            "AttnDownBlock2D",
            "DownBlock2D",
            "DownBlock2D"
        ])
    );
    assert_eq!(
        v["up_block_types"],
        json!(["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"])
    );
    assert_eq!(v["block_out_channels"], json!([128, 256, 256, 256]));
    // One head per attention: null (diffusers' default when absent would be 8 heads' width).
    assert_eq!(v["attention_head_dim"], Value::Null);
    assert_eq!(v["norm_eps"], json!(1e-6)); // the f32's shortest decimal, not 9.99999997e-7
    assert_eq!(v["freq_shift"], json!(1));
    assert_eq!(v["downsample_padding"], json!(0));
    assert_eq!(v["flip_sin_to_cos"], json!(false));
    assert_eq!(v["time_embedding_dim"], Value::Null); // 512 = 4·128, diffusers' default
    assert_eq!(v["num_class_embeds"], Value::Null);
    assert_eq!(v["class_embed_type"], Value::Null);
    assert_eq!(v["time_embedding_type"], "positional");
    assert_eq!(v["resnet_time_scale_shift"], "default");
    assert_eq!(v["act_fn"], "silu");
    assert_eq!(v["downsample_type"], "conv");
    assert_eq!(v["upsample_type"], "conv");
    assert_eq!(v["mid_block_type"], "UNetMidBlock2D");
    assert_eq!(v["dropout"], json!(0.0));
    assert!(v.get("infodiff_factors").is_none());
}

#[test]
fn to_json_reproduces_every_fixture_config() {
    let configs = fixture_configs();
    assert_eq!(configs.len(), 7, "{configs:?}");
    for p in configs {
        let file = read_json(&p);
        let c = UNetConfig::from_json(&file).unwrap();
        round_trip(&c);
        let v = c.to_json();
        // diffusers' own file, key for key and value for value (in its order).
        assert_eq!(keys(&v), keys(&file), "{}", p.display());
        assert_eq!(v, file, "{}", p.display());
    }
}

#[test]
fn to_json_writes_a_non_default_time_embedding_dim() {
    let c = UNetConfig::from_json(&tiny(|v| v["time_embedding_dim"] = json!(48))).unwrap();
    assert_eq!(c.time_embed_dim, 48);
    assert_eq!(c.to_json()["time_embedding_dim"], json!(48));
    round_trip(&c);
    // 32 = 4·8 is diffusers' default: written as null.
    let c = UNetConfig::from_json(&tiny(|v| v["time_embedding_dim"] = json!(32))).unwrap();
    assert_eq!(c.to_json()["time_embedding_dim"], Value::Null);
    round_trip(&c);
    // Other values away from the defaults.
    let c = UNetConfig::from_json(&tiny(|v| {
        v["freq_shift"] = json!(0.25);
        v["mid_block_scale_factor"] = json!(1.414);
        v["norm_eps"] = json!(1e-3);
        v["center_input_sample"] = json!(true);
        v["add_attention"] = json!(false);
        v["attn_norm_num_groups"] = json!(2);
        v["sample_size"] = Value::Null;
        v["in_channels"] = json!(1);
        v["out_channels"] = json!(2);
    }))
    .unwrap();
    round_trip(&c);
}

#[test]
fn multi_factor_config_round_trips_and_expects_one_table_per_factor() {
    let v = factored(&[("floor_hue", 10), ("wall_hue", 10), ("shape", 4)]);
    let c = UNetConfig::from_json(&v).unwrap();
    assert_eq!(c.factors, [11, 11, 5]); // values + the null slot
    assert_eq!(c.factor_names, ["floor_hue", "wall_hue", "shape"]);
    assert_eq!(c.num_class_embeds, None);
    round_trip(&c);
    let j = c.to_json();
    assert_eq!(j["infodiff_factors"], v["infodiff_factors"]);
    assert_eq!(j["num_class_embeds"], Value::Null);
    let k = keys(&j);
    let at = k.iter().position(|k| k == "infodiff_factors").unwrap();
    assert_eq!(
        (k[at - 1].as_str(), k[at + 1].as_str()),
        ("in_channels", "layers_per_block")
    );

    let te = c.time_embed_dim;
    let tables: Vec<_> = expected_tensors(&c)
        .into_iter()
        .filter(|(n, _)| n.starts_with("class_embedding"))
        .collect();
    assert_eq!(
        tables,
        [
            ("class_embeddings.0.weight".to_string(), vec![11, te]),
            ("class_embeddings.1.weight".to_string(), vec![11, te]),
            ("class_embeddings.2.weight".to_string(), vec![5, te]),
        ]
    );
    // num_class_embeds: null is "absent".
    let mut with_null = v.clone();
    with_null["num_class_embeds"] = Value::Null;
    assert_eq!(UNetConfig::from_json(&with_null).unwrap(), c);
    // The plain class-conditional model still expects class_embedding.weight.
    let plain = UNetConfig::from_json(&tiny(|_| {})).unwrap();
    assert!(
        expected_tensors(&plain)
            .iter()
            .any(|(n, s)| n == "class_embedding.weight" && *s == vec![5, plain.time_embed_dim])
    );
}

/// from_json of `v` fails with an error whose message names `key`.
fn refused(v: &Value, key: &str) {
    match UNetConfig::from_json(v) {
        Ok(c) => panic!("accepted {v}: {c:?}"),
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains(key), "{m} does not name {key}");
        }
    }
}

#[test]
fn bad_factor_lists_are_refused_naming_the_key() {
    // Both a plain class table and factors.
    let mut both = factored(&[("a", 3)]);
    both["num_class_embeds"] = json!(4);
    refused(&both, "num_class_embeds");
    refused(&factored(&[]), "infodiff_factors");
    refused(
        &factored(&[("a", 3), ("b", 0)]),
        "infodiff_factors[1].values",
    );
    refused(&factored(&[("a", 3), ("a", 2)]), "infodiff_factors[1].name");
    refused(&factored(&[("", 3)]), "infodiff_factors[0].name");
    refused(&factored(&[("a", 1 << 16)]), "infodiff_factors[0].values");
    // Σ (values + 1) = 2·40 001 rows > 65 536.
    refused(
        &factored(&[("a", 40_000), ("b", 40_000)]),
        "infodiff_factors",
    );
    let many: Vec<(String, usize)> = (0..65).map(|i| (format!("f{i}"), 2)).collect();
    let many: Vec<(&str, usize)> = many.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    refused(&factored(&many), "infodiff_factors");
    assert!(UNetConfig::from_json(&factored(&many[..64])).is_ok());
    let edit = |f: Value| {
        tiny(|v| {
            v.as_object_mut().unwrap().remove("num_class_embeds");
            v["infodiff_factors"] = f;
        })
    };
    refused(&edit(json!({"name": "a", "values": 3})), "infodiff_factors");
    refused(&edit(json!([3])), "infodiff_factors[0]");
    refused(&edit(json!([{"values": 3}])), "infodiff_factors[0].name");
    refused(
        &edit(json!([{"name": 7, "values": 3}])),
        "infodiff_factors[0].name",
    );
    refused(&edit(json!([{"name": "a"}])), "infodiff_factors[0].values");
    refused(
        &edit(json!([{"name": "a", "values": 2.5}])),
        "infodiff_factors[0].values",
    );
    refused(
        &edit(json!([{"name": "a", "values": -1}])),
        "infodiff_factors[0].values",
    );
    refused(
        &edit(json!([{"name": "a", "values": 3, "null": 0}])),
        "infodiff_factors[0].null",
    );
    refused(&edit(Value::Null), "infodiff_factors");
}

/// The tensors of `net` renamed by `rename` (None: dropped), plus `extra`.
fn weights_of(
    net: &UNet,
    rename: impl Fn(&str) -> Option<String>,
    extra: Vec<(String, Tensor)>,
) -> Weights {
    let mut tensors: HashMap<String, Tensor> = net
        .tensor_names()
        .filter_map(|n| rename(n).map(|m| (m, net.tensor(n).unwrap().clone())))
        .collect();
    tensors.extend(extra);
    Weights {
        tensors,
        ints: Default::default(),
        path: "<test weights>".into(),
    }
}

/// A deterministic (B, 3, 8, 8) input and timesteps.
fn input(b: usize) -> (Tensor, Vec<f32>) {
    let n = b * 3 * 8 * 8;
    let x = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 8) as f32 / 16_777_216.0 * 2.0 - 1.0)
        .collect();
    let t = (0..b).map(|i| 37.0 + 211.0 * i as f32).collect();
    (Tensor::new(vec![b, 3, 8, 8], x).unwrap(), t)
}

#[test]
fn one_factor_is_the_class_conditional_net_bit_for_bit() {
    let plain_cfg = UNetConfig::from_json(&tiny(|_| {})).unwrap(); // 5 rows
    let plain = UNet::random(plain_cfg, 7).unwrap();
    let one_cfg = UNetConfig::from_json(&factored(&[("digit", 4)])).unwrap(); // 4 + null = 5 rows
    let w = weights_of(
        &plain,
        |n| Some(n.replace("class_embedding.weight", "class_embeddings.0.weight")),
        vec![],
    );
    let one = UNet::from_weights(one_cfg, w).unwrap();
    let (x, t) = input(5);
    let labels = [0i64, 4, 2, 3, 1];
    let a = plain.forward(&x, &t, Some(&labels)).unwrap();
    let b = one.forward(&x, &t, Some(&labels)).unwrap();
    // The same operations on the same values: equal bits.
    assert_eq!(
        a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn two_factors_are_the_net_whose_table_rows_are_the_sums() {
    // Factors of 2 and 3 values: tables E₀ (3, te) and E₁ (4, te) with their null rows.
    let two_cfg = UNetConfig::from_json(&factored(&[("hue", 2), ("shape", 3)])).unwrap();
    let two = UNet::random(two_cfg.clone(), 11).unwrap();
    let te = two_cfg.time_embed_dim;
    let (e0, e1) = (
        two.tensor("class_embeddings.0.weight").unwrap(),
        two.tensor("class_embeddings.1.weight").unwrap(),
    );
    assert_eq!((&e0.shape, &e1.shape), (&vec![3, te], &vec![4, te]));
    // The plain net with 12 = 3·4 classes, row 4a + b = E₀[a] + E₁[b].
    let mut table = Vec::with_capacity(12 * te); // (12, te)
    for a in 0..3 {
        for b in 0..4 {
            table.extend((0..te).map(|k| e0.data[a * te + k] + e1.data[b * te + k]));
        }
    }
    let plain_cfg = UNetConfig::from_json(&tiny(|v| v["num_class_embeds"] = json!(12))).unwrap();
    let w = weights_of(
        &two,
        |n| (!n.starts_with("class_embeddings.")).then(|| n.to_string()),
        vec![(
            "class_embedding.weight".into(),
            Tensor::new(vec![12, te], table).unwrap(),
        )],
    );
    let plain = UNet::from_weights(plain_cfg, w).unwrap();
    let (x, t) = input(6);
    let pairs = [(0i64, 0i64), (2, 3), (1, 2), (0, 3), (2, 0), (1, 1)]; // (hue, shape)
    let labels: Vec<i64> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect(); // (B, 2)
    let joint: Vec<i64> = pairs.iter().map(|(a, b)| 4 * a + b).collect();
    let got = two.forward(&x, &t, Some(&labels)).unwrap();
    let want = plain.forward(&x, &t, Some(&joint)).unwrap();
    let rel = rel_l2(&got, &want);
    eprintln!("two factors vs summed table: relative L2 {rel:.2e}");
    // The embeddings differ only in the order of two f32 additions, (m + E₀) + E₁ against
    // m + (E₀ + E₁): about u = 6e−8 relative on the embedding, carried through a dozen layers
    // at gain ≲ 10. 1e−6 bounds that.
    assert!(rel <= 1e-6, "relative L2 {rel:e}");
}

#[test]
fn factor_labels_are_checked_per_factor() {
    let cfg = UNetConfig::from_json(&factored(&[("hue", 2), ("shape", 3)])).unwrap();
    let net = UNet::random(cfg, 3).unwrap();
    let (x, t) = input(2);
    // "hue" has 3 rows (2 values and its null slot, 2): label 3 is past them.
    let e = net
        .forward(&x, &t, Some(&[3, 0, 1, 1]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hue"), "{e}");
    let e = net
        .forward(&x, &t, Some(&[0, 4, 1, 1]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shape"), "{e}");
    assert!(net.forward(&x, &t, Some(&[0, 1, -1, 1])).is_err());
    // B·F labels, not B.
    assert!(net.forward(&x, &t, Some(&[0, 1])).is_err());
    assert!(net.forward(&x, &t, None).is_err());
    // The null slots (the last rows) are labels.
    assert!(net.forward(&x, &t, Some(&[2, 3, 2, 3])).is_ok());
}
