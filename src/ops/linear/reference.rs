//! The f64 oracle of the linear layer y (N, out) = x (N, in) · Wᵀ + b and of its backward
//! dx = dy · W, dW = dyᵀ · x, db = Σ_rows dy: plain loops, f64 throughout (the twins of
//! [`super::cpu::linear`] and [`super::backward::linear_backward`], and the forward whose
//! finite differences check the backward). Test oracles: the slices must have the lengths
//! their shapes say (indexing panics otherwise).

/// y (N, out) = x (N, in) · Wᵀ (W (out, in)) + b (out).
pub fn linear(
    x: &[f64],
    (n, fin): (usize, usize),
    w: &[f64],
    fout: usize,
    b: Option<&[f64]>,
) -> Vec<f64> {
    let mut y = vec![0.0; n * fout]; // (N, out)
    for i in 0..n {
        for o in 0..fout {
            let mut s = b.map_or(0.0, |b| b[o]);
            for k in 0..fin {
                s += x[i * fin + k] * w[o * fin + k];
            }
            y[i * fout + o] = s;
        }
    }
    y
}

/// The gradients of the linear layer for upstream dy.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearGrads {
    /// (N, in)
    pub dx: Vec<f64>,
    /// (out, in)
    pub dw: Vec<f64>,
    /// (out)
    pub db: Vec<f64>,
}

/// dx = dy · W, dW = dyᵀ · x, db = Σ_rows dy for x (N, in), W (out, in), dy (N, out).
pub fn linear_backward(
    x: &[f64],
    (n, fin, fout): (usize, usize, usize),
    w: &[f64],
    dy: &[f64],
) -> LinearGrads {
    let mut g = LinearGrads {
        dx: vec![0.0; n * fin],
        dw: vec![0.0; fout * fin],
        db: vec![0.0; fout],
    };
    for i in 0..n {
        for o in 0..fout {
            let d = dy[i * fout + o];
            g.db[o] += d;
            for k in 0..fin {
                g.dx[i * fin + k] += d * w[o * fin + k];
                g.dw[o * fin + k] += d * x[i * fin + k];
            }
        }
    }
    g
}
