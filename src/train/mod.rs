//! `infodiff train`: denoising score matching of a U-Net on a [`crate::data::Dataset`], with
//! AdamW ([`optim`]), an EMA of the weights (what is saved and sampled), the DSM loss for ε-, v-
//! and x̂₀-prediction ([`loss`]), atomic checkpoints that resume bit for bit ([`checkpoint`]).
//! Deterministic: the same seed and data give the same weights on any thread count.

pub mod checkpoint;
pub mod loss;
pub mod optim;
