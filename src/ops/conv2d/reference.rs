//! The f64 oracle of the convolution and of its backward ([`super::backward`]): direct loops,
//! written for clarity.
//!
//! y[b, o, oy, ox] = bias[o] + Σ_{c, i, j} w[o, c, i, j] · x[b, c, oy·s + i − pt, ox·s + j − pl]
//! (x = 0 outside the image), and for upstream dy (B, O, Ho, Wo):
//! dx[b, c, iy, ix] = Σ w[o, c, i, j] · dy[b, o, oy, ox] over the (o, oy, ox, i, j) that read
//! x[b, c, iy, ix], dw[o, c, i, j] = Σ_{b, oy, ox} dy[b, o, oy, ox] · x[b, c, oy·s + i − pt, …],
//! db[o] = Σ_{b, oy, ox} dy[b, o, oy, ox].
//!
//! Oracles for tests: they index their inputs directly and panic on lengths that do not match
//! the shapes (the fast kernels check and return errors).

/// (Ho, Wo) of the convolution; panics where [`super::out_size`] would return an error.
fn out_hw(
    xshape: [usize; 4],
    wshape: [usize; 4],
    stride: usize,
    pad: [usize; 4],
) -> (usize, usize) {
    super::out_size(xshape, wshape, stride, pad).expect("reference conv2d: shapes")
}

/// Calls `f(b, o, c, oy, ox, i, j, x_index)` for every tap that reads an in-image pixel.
fn for_each_tap(
    xshape: [usize; 4],
    wshape: [usize; 4],
    stride: usize,
    pad: [usize; 4],
    mut f: impl FnMut([usize; 7], usize),
) {
    let [bn, c, h, wd] = xshape;
    let [o, _, kh, kw] = wshape;
    let [pt, _, pl, _] = pad;
    let (ho, wo) = out_hw(xshape, wshape, stride, pad);
    for b in 0..bn {
        for oc in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    for ci in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (oy * stride + i) as isize - pt as isize;
                                let ix = (ox * stride + j) as isize - pl as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((b * c + ci) * h + iy as usize) * wd + ix as usize;
                                f([b, oc, ci, oy, ox, i, j], xi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// y (B, O, Ho, Wo) = x (B, C, H, W) * w (O, C, kh, kw) + b (O) in f64, stride, zero padding
/// (top, bottom, left, right).
pub fn conv2d(
    x: &[f32],
    xshape: [usize; 4],
    w: &[f32],
    wshape: [usize; 4],
    b: Option<&[f32]>,
    stride: usize,
    pad: [usize; 4],
) -> Vec<f64> {
    let [bn, c, _, _] = xshape;
    let [o, _, kh, kw] = wshape;
    let (ho, wo) = out_hw(xshape, wshape, stride, pad);
    let mut y = vec![0.0f64; bn * o * ho * wo]; // (B, O, Ho, Wo)
    if let Some(b) = b {
        for (k, v) in y.iter_mut().enumerate() {
            *v = b[(k / (ho * wo)) % o] as f64;
        }
    }
    for_each_tap(
        xshape,
        wshape,
        stride,
        pad,
        |[bi, oc, ci, oy, ox, i, j], xi| {
            let wv = w[((oc * c + ci) * kh + i) * kw + j] as f64;
            y[((bi * o + oc) * ho + oy) * wo + ox] += wv * x[xi] as f64;
        },
    );
    y
}

/// (dx (B, C, H, W), dw (O, C, kh, kw), db (O)) in f64 of y = conv2d(x, w, b, stride, pad) for
/// upstream dy (B, O, Ho, Wo).
pub fn conv2d_backward(
    x: &[f32],
    xshape: [usize; 4],
    w: &[f32],
    wshape: [usize; 4],
    stride: usize,
    pad: [usize; 4],
    dy: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [bn, c, h, wd] = xshape;
    let [o, _, kh, kw] = wshape;
    let (ho, wo) = out_hw(xshape, wshape, stride, pad);
    let mut dx = vec![0.0f64; bn * c * h * wd]; // (B, C, H, W)
    let mut dw = vec![0.0f64; o * c * kh * kw]; // (O, C, kh, kw)
    let mut db = vec![0.0f64; o]; // (O)
    for (k, v) in dy.iter().enumerate() {
        db[(k / (ho * wo)) % o] += *v as f64;
    }
    for_each_tap(
        xshape,
        wshape,
        stride,
        pad,
        |[bi, oc, ci, oy, ox, i, j], xi| {
            let g = dy[((bi * o + oc) * ho + oy) * wo + ox] as f64;
            let wi = ((oc * c + ci) * kh + i) * kw + j;
            dx[xi] += w[wi] as f64 * g;
            dw[wi] += x[xi] as f64 * g;
        },
    );
    (dx, dw, db)
}
