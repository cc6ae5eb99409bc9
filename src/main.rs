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
    /// Throughput of the engine's own kernels on this machine.
    Bench {
        /// gemm (square SGEMM), conv (3×3, 64→64, 32×32) or unet (full forward).
        #[arg(value_enum)]
        what: BenchWhat,
        /// Model folder for `unet` (default: the DDPM CIFAR-10 architecture, random weights).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Batch for conv and unet (default 16 and 64).
        #[arg(long)]
        batch: Option<usize>,
        /// Matrix size for gemm (default 1024).
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// For unet: time one more forward op by op (conv2d, group_norm+silu, attention, ...).
        #[arg(long)]
        profile: bool,
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

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BenchWhat {
    Gemm,
    Conv,
    Unet,
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
        Command::Bench {
            what,
            model,
            batch,
            size,
            json,
            profile,
        } => {
            use infodiff::nn::bench;
            if batch == Some(0) || size == 0 {
                return Err(Error::config("--batch/--size", "at least 1", 0));
            }
            let r = match what {
                BenchWhat::Gemm => bench::gemm(size)?,
                BenchWhat::Conv => bench::conv(batch.unwrap_or(16))?,
                BenchWhat::Unet => bench::unet(model.as_deref(), batch.unwrap_or(64), profile)?,
            };
            if json {
                println!("{}", serde_json::to_string(&r).expect("serialisable"));
            } else {
                print!("{}: {:.4} s", r.what, r.seconds);
                if let Some(g) = r.gflops {
                    print!(", {g:.1} GFLOP/s");
                }
                if let Some(i) = r.images_per_s {
                    print!(", {i:.2} images/s");
                }
                println!();
                if let Some(ops) = &r.profile {
                    let total: f64 = ops.iter().map(|o| o.seconds).sum();
                    println!("profile of one more forward ({total:.4} s in the ops below):");
                    for o in ops {
                        println!(
                            "  {:<16} {:>9.4} s {:>5.1}% {:>6} calls",
                            o.op,
                            o.seconds,
                            100.0 * o.seconds / total,
                            o.calls
                        );
                    }
                }
            }
            Ok(())
        }
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
