//! `--data SPEC` opened (every source; `gmm:` through the measure config reader).
