//! The `infodiff` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use infodiff::Error;
use infodiff::measure::{self, Config};

#[derive(Parser)]
#[command(
    name = "infodiff",
    version,
    about = "Measure how information about a label is produced along diffusion trajectories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the information measurement (the embedded default when no config is given).
    Measure {
        /// JSON config (see README for the schema).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output folder for curves.csv, summary.json and entropy.svg.
        #[arg(long, default_value = "infodiff-out")]
        out: PathBuf,
        /// Number of trajectories (overrides the config).
        #[arg(long)]
        trajectories: Option<usize>,
        /// Sampler steps (overrides the config).
        #[arg(long)]
        steps: Option<usize>,
        /// Seed (overrides the config).
        #[arg(long)]
        seed: Option<u64>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Measure a class-conditional diffusers UNet2DModel folder instead of the mixture.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print the default config as JSON and exit.
        #[arg(long)]
        print_default_config: bool,
    },
    /// Run a diffusers UNet2DModel on the inputs of a safetensors file and write its output.
    Denoise {
        /// Folder with config.json and diffusion_pytorch_model.safetensors.
        #[arg(long)]
        model: PathBuf,
        /// safetensors with `sample` (B, C, H, W), `timestep` (B) and optional `class_labels` (B).
        #[arg(long)]
        input: PathBuf,
        /// safetensors to write, holding tensor `out`.
        #[arg(long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infodiff: error: {e}");
            match e {
                Error::Config { .. } | Error::Json { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Denoise {
            model,
            input,
            output,
        } => {
            infodiff::nn::unet::denoise_file(&model, &input, &output)?;
            println!("wrote {}", output.display());
            Ok(())
        }
        Command::Measure {
            config,
            out,
            trajectories,
            steps,
            seed,
            threads,
            model,
            print_default_config,
        } => {
            if print_default_config {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&measure::default_config().to_json())
                        .expect("serialisable")
                );
                return Ok(());
            }
            let mut cfg = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                    Config::from_json_str(&text, &path.display().to_string())?
                }
                None => measure::default_config(),
            };
            let mut v = cfg.to_json();
            if let Some(dir) = &model {
                let m = v.as_object_mut().expect("object");
                m.remove("mixture");
                if config.is_none() {
                    // the default decision problems belong to the default mixture
                    m.insert("partitions".into(), serde_json::json!([]));
                }
                m.insert("model".into(), serde_json::json!(dir.display().to_string()));
            }
            if let Some(n) = trajectories {
                v["trajectories"] = n.into();
            }
            if let Some(s) = steps {
                v["sampler"]["steps"] = s.into();
            }
            if let Some(s) = seed {
                v["seed"] = s.into();
            }
            cfg = Config::from_value(&v)?; // overrides validated like the file
            if let Some(t) = threads {
                if t == 0 {
                    return Err(Error::config("--threads", "at least 1", 0));
                }
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build_global()
                    .map_err(|e| Error::Unsupported {
                        op: "--threads",
                        reason: e.to_string(),
                    })?;
            }
            let bar = ProgressBar::new(cfg.trajectories as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {bar:40} {pos}/{len} trajectories ({per_sec}, eta {eta})",
                )
                .expect("valid template"),
            );
            let tick = |n: usize| bar.inc(n as u64);
            let report = measure::run(&cfg, None, Some(&tick))?;
            bar.finish_and_clear();
            for w in report.warnings() {
                eprintln!("infodiff: warning: {w}");
            }
            report.write(&out)?;
            print!("{}", report.table());
            println!(
                "wrote {}/curves.csv, summary.json, entropy.svg",
                out.display()
            );
            Ok(())
        }
    }
}
