//! The embeddings of the U-Net's conditioning: diffusers' sinusoidal timestep embedding and rows
//! of a class-embedding table. Host code for every backend (the time-embedding MLP runs there).
//! The timestep embedding has no backward (its input is not learned); the table's is
//! dtable\[ids\[r\], ·\] += dy\[r, ·\], rows r in order ([`embedding_backward`]).

use crate::error::{Error, Result};

/// diffusers' sinusoidal timestep embedding of t (B) into `dim` features:
/// freqs_i = exp(−ln(max_period)·i/(half − shift)), emb = [sin(t·f), cos(t·f)] (or [cos, sin]
/// when `flip_sin_to_cos`), zero-padded for odd `dim`, into y (B, dim).
pub fn timestep_embedding(
    t: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
    max_period: f64,
    y: &mut [f32],
) {
    let half = dim / 2;
    y.fill(0.0);
    for (row, &tv) in y.chunks_mut(dim.max(1)).zip(t) {
        for i in 0..half {
            // diffusers computes the exponent, the frequency and t·f in f32 (even in float64 mode).
            let exponent = (-(max_period.ln() as f32) * i as f32) / (half as f64 - shift) as f32;
            let arg = tv * exponent.exp();
            let (s, c) = (arg.sin(), arg.cos());
            if flip_sin_to_cos {
                row[i] = c;
                row[half + i] = s;
            } else {
                row[i] = s;
                row[half + i] = c;
            }
        }
    }
}

/// Rows `ids` of an embedding table (N, D). (len(ids), D)
pub fn embedding(table: &[f32], (n, d): (usize, usize), ids: &[usize]) -> Result<Vec<f32>> {
    if table.len() != n * d {
        return Err(Error::shape("embedding: table (N, D)", n * d, table.len()));
    }
    let mut out = Vec::with_capacity(ids.len() * d); // (len(ids), D)
    for &i in ids {
        if i >= n {
            return Err(Error::shape("embedding: index < table rows", n, i));
        }
        out.extend_from_slice(&table[i * d..(i + 1) * d]);
    }
    Ok(out)
}

/// dtable (N, D) += the rows of dy (len(ids), D) at `ids` (in row order): the backward of
/// [`embedding`].
pub fn embedding_backward(
    dy: &[f32],
    (n, d): (usize, usize),
    ids: &[usize],
    dtable: &mut [f32],
) -> Result<()> {
    if dtable.len() != n * d || dy.len() != ids.len() * d {
        return Err(Error::shape(
            "embedding_backward: dtable (N, D), dy (len(ids), D)",
            (n * d, ids.len() * d),
            (dtable.len(), dy.len()),
        ));
    }
    // Every index checked before any row is touched: an error leaves dtable as it was.
    if let Some(&i) = ids.iter().find(|&&i| i >= n) {
        return Err(Error::shape("embedding_backward: index < table rows", n, i));
    }
    for (&i, g) in ids.iter().zip(dy.chunks_exact(d.max(1))) {
        for (t, g) in dtable[i * d..(i + 1) * d].iter_mut().zip(g) {
            *t += g;
        }
    }
    Ok(())
}
