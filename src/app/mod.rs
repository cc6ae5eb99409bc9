//! The `infodiff measure` job: a JSON config (process, mixture, sampler, decision problems,
//! trajectories, seed), the run, and its outputs (`curves.csv`, `summary.json`, `entropy.svg`),
//! written as a set (see [`crate::io::atomic`]).
//!
//! ```
//! use infodiff::app::{self, Config};
//! let cfg = Config::from_json_str(r#"{
//!     "process": {"kind": "vp", "beta_min": 0.1, "beta_max": 20},
//!     "mixture": {"components": [{"mean": [-1], "var": 0, "class": 0}, {"mean": [1], "var": 0, "class": 1}]},
//!     "sampler": {"kind": "euler_maruyama", "steps": 200},
//!     "partitions": [{"name": "sign", "a": [0], "b": [1]}],
//!     "trajectories": 512, "seed": 1
//! }"#, "inline").unwrap();
//! let report = app::run(&cfg, None, None).unwrap();
//! let c = &report.curves;
//! assert_eq!(c.t.len(), 201);                       // one point per grid point, noise first
//! assert!((c.h_online[0] - 2f64.ln()).abs() < 1e-6); // the prior at the noise end
//! assert!(c.h_online[200] < 1e-3);                   // decided at the data end
//! // refusals name the field
//! let err = Config::from_json_str(r#"{"trajectories": 0}"#, "inline").unwrap_err();
//! assert!(err.to_string().contains("`trajectories`"));
//! ```
//!
//! The module map: [`config`] (the JSON schema as serde types, the parse into a validated
//! [`Config`], the validators), [`runner`] (engine and device choice, [`run`], [`run_on`],
//! [`estimate`]), [`report`] ([`Report`], the result checks, the output set), [`plot`] (the
//! SVG), [`mod@bench`] (the bench harness), [`sample`] (`infodiff sample`).

pub mod bench;
pub mod config;
pub mod data;
pub mod denoise;
pub mod plot;
pub mod report;
pub mod runner;
pub mod sample;
pub mod train;

pub use config::{
    Config, ConfigFile, MAX_STEPS, MAX_TRAJECTORIES, Overrides, ProcessConfig, SamplerConfig,
    default_config,
};
pub use report::{ENTROPY_TOL, Report, check_results};
pub use runner::{Engine, Estimate, estimate, gpu_limit, run, run_on};
