//! A model folder as users hold it: where its UNet2DModel lies and which scheduler it was trained
//! with.
//!
//! Two layouts are read:
//! - a diffusers pipeline folder: `model_index.json` naming a `unet` entry of class
//!   `UNet2DModel` and a `scheduler` entry; the network in `unet/` (`config.json` +
//!   `diffusion_pytorch_model.safetensors`), the scheduler in `scheduler/scheduler_config.json`;
//! - a bare UNet2DModel folder (`config.json` + `diffusion_pytorch_model.safetensors`): the
//!   scheduler is its `scheduler_config.json` where one lies beside the network (older hub
//!   layouts), else diffusers' DDPMScheduler defaults (linear β 1e-4…0.02, T = 1000, ε).
//!
//! Nothing is loaded here but the scheduler; the network is read by
//! [`crate::nn::unet::UNet::load`] from [`ModelDir::unet`]. Every refusal names the file and
//! what was expected.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::diffusion::Scheduler;
use crate::error::{Error, Result};

/// The network weights file of a UNet2DModel folder.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// What a bare UNet2DModel folder implies (diffusers' DDPMScheduler with every default).
const DEFAULT_SCHEDULER: &str = r#"{"_class_name": "DDPMScheduler"}"#;

/// A model folder, opened: the network's folder and the scheduler.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDir {
    /// The folder given.
    pub root: PathBuf,
    /// The folder holding `config.json` and `diffusion_pytorch_model.safetensors`.
    pub unet: PathBuf,
    pub scheduler: Scheduler,
    /// The `scheduler_config.json` read; None: the bare-UNet default.
    pub scheduler_file: Option<PathBuf>,
}

fn bad(path: &Path, expected: impl Into<String>, found: impl std::fmt::Display) -> Error {
    Error::model(path.display().to_string(), "", expected, found)
}

/// Checks that `dir` holds a UNet2DModel (`config.json`, whose `_class_name` where given is
/// `UNet2DModel`, and the safetensors weights).
fn check_unet_folder(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(bad(
            dir,
            "a UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors)",
            "no such folder",
        ));
    }
    let config = dir.join("config.json");
    if !config.is_file() {
        return Err(bad(
            &config,
            "the UNet2DModel's config.json",
            "no such file",
        ));
    }
    let v = read_json(&config)?;
    if let Some(class) = v.get("_class_name")
        && class.as_str() != Some("UNet2DModel")
    {
        return Err(Error::Json {
            path: config.display().to_string(),
            message: format!(
                "`_class_name`: expected \"UNet2DModel\" (the only network infodiff runs), found {class}"
            ),
        });
    }
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        let found = if dir.join("diffusion_pytorch_model.bin").is_file() {
            "only diffusion_pytorch_model.bin (PyTorch pickles are not read; convert it with \
             diffusers' save_pretrained(..., safe_serialization=True))"
        } else {
            "no such file"
        };
        return Err(bad(
            &weights,
            "the UNet2DModel's safetensors weights",
            found,
        ));
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = super::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.display().to_string(),
        message: format!("not valid JSON: {e}"),
    })
}

/// The class named by `model_index.json` entry `key` (`["diffusers", "Class"]`).
fn entry_class(index: &Value, key: &str, path: &Path) -> Result<String> {
    let wrong = |found: String| Error::Json {
        path: path.display().to_string(),
        message: format!(
            "entry `{key}`: expected [\"<library>\", \"<class>\"] (the pipeline's {key}), found {found}"
        ),
    };
    match index.get(key) {
        None => Err(wrong("no such entry".into())),
        Some(Value::Array(a)) if a.len() == 2 => match a[1].as_str() {
            Some(c) => Ok(c.to_string()),
            None => Err(wrong(Value::Array(a.clone()).to_string())),
        },
        Some(other) => Err(wrong(other.to_string())),
    }
}

impl ModelDir {
    /// Opens a diffusers pipeline folder or a bare UNet2DModel folder (see the module docs).
    pub fn open(path: &Path) -> Result<ModelDir> {
        let layouts = "a diffusers pipeline folder (model_index.json + unet/ + scheduler/) or a \
                       UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors)";
        if !path.is_dir() {
            let found = if path.exists() {
                "not a folder"
            } else {
                "no such folder"
            };
            return Err(bad(path, layouts, found));
        }
        let index_path = path.join("model_index.json");
        if index_path.is_file() {
            let index = read_json(&index_path)?;
            if !index.is_object() {
                return Err(Error::Json {
                    path: index_path.display().to_string(),
                    message: format!("expected a JSON object, found {index}"),
                });
            }
            let unet_class = entry_class(&index, "unet", &index_path)?;
            if unet_class != "UNet2DModel" {
                return Err(Error::Json {
                    path: index_path.display().to_string(),
                    message: format!(
                        "entry `unet`: expected class \"UNet2DModel\" (the only network infodiff \
                         runs), found \"{unet_class}\""
                    ),
                });
            }
            entry_class(&index, "scheduler", &index_path)?;
            let unet = path.join("unet");
            check_unet_folder(&unet)?;
            let file = path.join("scheduler").join("scheduler_config.json");
            if !file.is_file() {
                return Err(bad(
                    &file,
                    "the pipeline's scheduler config (model_index.json names a scheduler)",
                    "no such file",
                ));
            }
            let scheduler = Scheduler::load(&file)?;
            return Ok(ModelDir {
                root: path.to_path_buf(),
                unet,
                scheduler,
                scheduler_file: Some(file),
            });
        }
        if !path.join("config.json").is_file() {
            return Err(bad(
                path,
                layouts,
                "neither model_index.json nor config.json",
            ));
        }
        check_unet_folder(path)?;
        let beside = path.join("scheduler_config.json");
        let (scheduler, scheduler_file) = if beside.is_file() {
            (Scheduler::load(&beside)?, Some(beside))
        } else {
            let origin = "the default scheduler of a bare UNet2DModel folder";
            (Scheduler::from_json(DEFAULT_SCHEDULER, origin)?, None)
        };
        Ok(ModelDir {
            root: path.to_path_buf(),
            unet: path.to_path_buf(),
            scheduler,
            scheduler_file,
        })
    }

    /// The scheduler's class (`_class_name`), or `DDPMScheduler` for the bare-UNet default.
    pub fn scheduler_class(&self) -> &str {
        self.scheduler
            .class_name
            .as_deref()
            .unwrap_or("DDPMScheduler")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/unet")
            .join(name)
    }

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A pipeline folder around the tiny-uncond network: model_index.json (`index`), unet/ and,
    /// where `scheduler` is given, scheduler/scheduler_config.json.
    fn pipeline(tag: &str, index: &str, scheduler: Option<&str>) -> Tmp {
        let root =
            std::env::temp_dir().join(format!("infodiff-model-dir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("unet")).unwrap();
        for f in ["config.json", WEIGHTS_FILE] {
            std::fs::copy(fixture("tiny-uncond").join(f), root.join("unet").join(f)).unwrap();
        }
        std::fs::write(root.join("model_index.json"), index).unwrap();
        if let Some(s) = scheduler {
            std::fs::create_dir_all(root.join("scheduler")).unwrap();
            std::fs::write(root.join("scheduler/scheduler_config.json"), s).unwrap();
        }
        Tmp(root)
    }

    const INDEX: &str = r#"{"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"]}"#;
    const DDIM: &str = r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 1000}"#;

    fn err(path: &Path) -> String {
        ModelDir::open(path).unwrap_err().to_string()
    }

    #[test]
    fn refusals_name_the_file_and_what_was_expected() {
        // Every check below runs before the scheduler is parsed.
        let e = err(&fixture("no-such-model"));
        assert!(
            e.contains("no-such-model") && e.contains("no such folder"),
            "{e}"
        );
        let e = err(&fixture("tiny-uncond").join("config.json"));
        assert!(e.contains("not a folder"), "{e}");

        let no_unet = pipeline(
            "no-unet-entry",
            r#"{"scheduler": ["diffusers", "DDPMScheduler"]}"#,
            Some(DDIM),
        );
        let e = err(&no_unet.0);
        assert!(
            e.contains("model_index.json")
                && e.contains("entry `unet`")
                && e.contains("no such entry"),
            "{e}"
        );
        let cond = pipeline(
            "cond-unet",
            r#"{"scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DConditionModel"]}"#,
            Some(DDIM),
        );
        let e = err(&cond.0);
        assert!(
            e.contains("UNet2DModel") && e.contains("UNet2DConditionModel"),
            "{e}"
        );
        let no_sched_entry = pipeline(
            "no-sched-entry",
            r#"{"unet": ["diffusers", "UNet2DModel"]}"#,
            None,
        );
        let e = err(&no_sched_entry.0);
        assert!(e.contains("entry `scheduler`"), "{e}");
        let no_file = pipeline("no-sched-file", INDEX, None);
        let e = err(&no_file.0);
        assert!(
            e.contains("scheduler_config.json") && e.contains("no such file"),
            "{e}"
        );
        let no_unet_dir = pipeline("no-unet-dir", INDEX, Some(DDIM));
        std::fs::remove_dir_all(no_unet_dir.0.join("unet")).unwrap();
        let e = err(&no_unet_dir.0);
        assert!(e.contains("unet") && e.contains("no such folder"), "{e}");
        let no_weights = pipeline("no-weights", INDEX, Some(DDIM));
        std::fs::remove_file(no_weights.0.join("unet").join(WEIGHTS_FILE)).unwrap();
        let e = err(&no_weights.0);
        assert!(
            e.contains(WEIGHTS_FILE) && e.contains("no such file"),
            "{e}"
        );
        let broken = pipeline("broken-index", "{", Some(DDIM));
        let e = err(&broken.0);
        assert!(
            e.contains("model_index.json") && e.contains("not valid JSON"),
            "{e}"
        );
        // Every refusal is the input's fault (exit code 2).
        for p in [&no_unet.0, &cond.0, &no_file.0, &no_weights.0, &broken.0] {
            assert!(
                ModelDir::open(p).unwrap_err().is_bad_input(),
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn both_layouts_open() {
        let bare = ModelDir::open(&fixture("tiny-class")).unwrap();
        assert_eq!(bare.unet, fixture("tiny-class"));
        assert_eq!(bare.scheduler_file, None);
        assert_eq!(bare.scheduler_class(), "DDPMScheduler");
        assert_eq!(bare.scheduler.num_train_timesteps, 1000);
        let p = pipeline("opens", INDEX, Some(DDIM));
        let m = ModelDir::open(&p.0).unwrap();
        assert_eq!(m.unet, p.0.join("unet"));
        assert_eq!(
            m.scheduler_file.as_deref(),
            Some(p.0.join("scheduler/scheduler_config.json").as_path())
        );
        assert_eq!(m.scheduler_class(), "DDIMScheduler");
    }
}
