//! The U-Net forward on a device: [`DeviceUNet`] uploads a [`UNet`]'s weights once and
//! implements [`UNetOps`] with the kernels of [`super::ops`], so the architecture is the CPU's
//! walk ([`UNet::forward_on`]). The time-embedding MLP (a few MFLOP) stays on the CPU; its
//! per-ResNet projections are uploaded as (B, C) vectors. [`GpuUNet`] is the GPU instance;
//! `DeviceUNet<Emu>` runs the same launches on the CPU interpreter, for tests.

use std::collections::HashMap;

use super::Gpu;
use super::ops::{Dev, GemmParams, GroupNormParams, pack_bf16};
use crate::error::{Error, Result};
use crate::nn::unet::{UNet, UNetOps};
use crate::tensor::Tensor;

/// A (B, C, H, W) activation in a device buffer.
pub struct DevTensor<B> {
    pub shape: [usize; 4],
    pub buf: B,
}

impl<B> DevTensor<B> {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// How a device stores the GEMM weights (convolutions and attention projections); biases and
/// normalisation parameters stay f32, and every product accumulates in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    F32,
    /// bfloat16 (round to nearest even): half the weight bytes.
    Bf16,
}

/// A network whose weights live on `D`.
pub struct DeviceUNet<'n, D: Dev> {
    dev: D,
    net: &'n UNet,
    storage: Storage,
    w: HashMap<String, D::Buf>,
    /// Per attention block: [W_q; W_k; W_v] (3C, C) and its bias (3C).
    qkv: HashMap<String, (D::Buf, D::Buf)>,
}

impl<'n, D: Dev> DeviceUNet<'n, D> {
    /// Uploads every weight of `net` (and each attention block's stacked Q/K/V projection),
    /// the GEMM weights in `storage`.
    pub fn new(dev: D, net: &'n UNet, storage: Storage) -> Result<Self> {
        let mut w = HashMap::new();
        let mut qkv = HashMap::new();
        let gemm_weight = |name: &str, t: &Tensor| {
            t.shape.len() == 4 || (name.ends_with(".to_out.0.weight") && t.shape.len() == 2)
        };
        let up = |v: &[f32], as_gemm_weight: bool| -> Result<D::Buf> {
            if as_gemm_weight && storage == Storage::Bf16 {
                dev.upload(&pack_bf16(v))
            } else {
                dev.upload(v)
            }
        };
        for name in net.tensor_names() {
            let t = net.tensor(name)?;
            w.insert(name.clone(), up(&t.data, gemm_weight(name, t))?);
            if let Some(p) = name.strip_suffix(".to_q.weight") {
                let cat = |suffix: &str| -> Result<Vec<f32>> {
                    let mut v = Vec::new();
                    for part in ["to_q", "to_k", "to_v"] {
                        v.extend_from_slice(&net.tensor(&format!("{p}.{part}.{suffix}"))?.data);
                    }
                    Ok(v)
                };
                let pair = (up(&cat("weight")?, true)?, dev.upload(&cat("bias")?)?);
                qkv.insert(p.to_string(), pair);
            }
        }
        Ok(DeviceUNet {
            dev,
            net,
            storage,
            w,
            qkv,
        })
    }

    /// The device the network lives on.
    pub fn device(&self) -> &D {
        &self.dev
    }

    fn w(&self, name: &str) -> Result<&D::Buf> {
        self.w.get(name).ok_or_else(|| Error::Unsupported {
            op: "UNet (device)",
            reason: format!("tensor `{name}` missing"),
        })
    }

    /// ε̂ for x (B, C, H, W), timesteps (B), class labels (B) where the model has classes.
    pub fn forward(&self, x: &Tensor, t: &[f32], labels: Option<&[i64]>) -> Result<Tensor> {
        let (b, x) = self.net.prepare_input(x)?;
        let emb = self.net.embedding(b, t, labels)?;
        let (_, c, h, w) = x.dims4("UNet::forward: sample")?;
        let xt = DevTensor {
            shape: [b, c, h, w],
            buf: self.dev.upload(&x.data)?,
        };
        let y = self.net.forward_on(self, xt, &emb)?;
        let data = self.dev.download(&y.buf)?;
        Tensor::new(y.shape.to_vec(), data[..y.numel()].to_vec())
    }

    /// The GEMM of a convolution with `m` output channels over x (B, C, H, W) as implicit
    /// im2col: kernel (kh, kw), stride, padding (top, bottom, left, right), output (Ho, Wo),
    /// per-channel bias, NCHW output, weights in this network's storage.
    fn conv_params(
        &self,
        m: usize,
        [b, c, h, w]: [usize; 4],
        (kh, kw): (usize, usize),
        stride: usize,
        pad: [usize; 4],
        (ho, wo): (usize, usize),
    ) -> Result<GemmParams> {
        let k = c * kh * kw;
        Ok(GemmParams {
            a_rs: k as i64,
            a_cs: 1,
            m: u32_of(m, "conv: output channels")?,
            n: u32_of(b * ho * wo, "conv: B·Ho·Wo")?,
            k: u32_of(k, "conv: C·kh·kw")?,
            zdiv: 1,
            b_im2col: 1,
            bias_mode: 1,
            a_bf16: (self.storage == Storage::Bf16) as u32,
            ic: c as u32,
            ih: h as u32,
            iw: w as u32,
            kh: kh as u32,
            kw: kw as u32,
            stride: stride as u32,
            pad_t: pad[0] as u32,
            pad_l: pad[2] as u32,
            oh: ho as u32,
            ow: wo as u32,
            ..Default::default()
        })
    }

    fn new_tensor(&self, shape: [usize; 4]) -> Result<DevTensor<D::Buf>> {
        Ok(DevTensor {
            shape,
            buf: self.dev.alloc(shape.iter().product::<usize>().max(1))?,
        })
    }
}

fn u32_of(v: usize, what: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(what, u32::MAX, v))
}

impl<D: Dev> UNetOps for DeviceUNet<'_, D> {
    type T = DevTensor<D::Buf>;

    fn dup(&self, x: &Self::T) -> Result<Self::T> {
        Ok(DevTensor {
            shape: x.shape,
            buf: self.dev.copy(&x.buf)?,
        })
    }

    fn conv(&self, x: &Self::T, prefix: &str, stride: usize, pad: [usize; 4]) -> Result<Self::T> {
        let wname = format!("{prefix}.weight");
        let (o, c, kh, kw) = self.net.tensor(&wname)?.dims4("conv (device): weight")?;
        let [b, xc, h, w] = x.shape;
        if xc != c || h + pad[0] + pad[1] < kh || w + pad[2] + pad[3] < kw || stride == 0 {
            return Err(Error::shape(
                "conv (device): weight (O, C, kh, kw) vs x (B, C, H, W)",
                (o, c, kh, kw),
                x.shape,
            ));
        }
        let ho = (h + pad[0] + pad[1] - kh) / stride + 1;
        let wo = (w + pad[2] + pad[3] - kw) / stride + 1;
        let p = self.conv_params(o, x.shape, (kh, kw), stride, pad, (ho, wo))?;
        let mut y = self.new_tensor([b, o, ho, wo])?;
        let bias = self.w(&format!("{prefix}.bias"))?;
        self.dev.gemm(
            &p,
            1,
            (self.w(&wname)?, 0),
            (&x.buf, 0),
            (&mut y.buf, 0),
            Some(bias),
        )?;
        Ok(y)
    }

    fn norm(&self, x: &Self::T, prefix: &str, groups: usize, silu: bool) -> Result<Self::T> {
        let [b, c, h, w] = x.shape;
        if groups == 0 || c % groups != 0 {
            return Err(Error::shape(
                "group_norm (device): groups dividing C",
                groups,
                c,
            ));
        }
        let p = GroupNormParams {
            channels: c as u32,
            groups: groups as u32,
            spatial: u32_of(h * w, "group_norm: H·W")?,
            silu: silu as u32,
            eps: self.net.config.norm_eps,
            pad_: 0.0,
        };
        let mut y = self.new_tensor(x.shape)?;
        let (gw, gb) = (
            self.w(&format!("{prefix}.weight"))?,
            self.w(&format!("{prefix}.bias"))?,
        );
        self.dev
            .group_norm(&p, (b * groups) as u32, &x.buf, &mut y.buf, gw, gb)?;
        Ok(y)
    }

    fn attention(&self, x: &Self::T, prefix: &str, groups: usize) -> Result<Self::T> {
        let [b, c, h, w] = x.shape;
        let n = h * w;
        let heads = self.net.config.heads(c);
        if heads == 0 || c % heads != 0 {
            return Err(Error::shape(
                "attention (device): heads dividing C",
                heads,
                c,
            ));
        }
        let dh = c / heads;
        let hn = self.norm(x, &format!("{prefix}.group_norm"), groups, false)?;
        let (wqkv, bqkv) = self.qkv.get(prefix).ok_or_else(|| Error::Unsupported {
            op: "UNet (device)",
            reason: format!("tensor `{prefix}.to_q.weight` missing"),
        })?;
        let (cn, nn) = ((c * n) as i64, n as i64);
        // Qᵀ, Kᵀ, Vᵀ: (B, 3C, HW) = [W_q; W_k; W_v] · X per image (a 1×1 convolution).
        let conv1x1 = |m: usize| self.conv_params(m, x.shape, (1, 1), 1, [0; 4], (h, w));
        let mut qkv = self.new_tensor([b, 3 * c, h, w])?;
        self.dev.gemm(
            &conv1x1(3 * c)?,
            1,
            (wqkv, 0),
            (&hn.buf, 0),
            (&mut qkv.buf, 0),
            Some(bqkv),
        )?;
        // S (B·heads, HW, HW): S[z][i][j] = Σ_c Q[b][h·dh + c][i] · K[b][h·dh + c][j].
        let zb = u32_of(b * heads, "attention: B·heads")?;
        let mut s = self.dev.alloc((b * heads * n * n).max(1))?;
        let ps = GemmParams {
            a_rs: 1,
            a_cs: nn,
            b_rs: nn,
            b_cs: 1,
            c_rs: nn,
            c_cs: 1,
            a_outer: 3 * cn,
            a_inner: dh as i64 * nn,
            b_outer: 3 * cn,
            b_inner: dh as i64 * nn,
            c_outer: heads as i64 * nn * nn,
            c_inner: nn * nn,
            m: n as u32,
            n: n as u32,
            k: dh as u32,
            zdiv: heads as u32,
            ..Default::default()
        };
        self.dev
            .gemm(&ps, zb, (&qkv.buf, 0), (&qkv.buf, c * n), (&mut s, 0), None)?;
        self.dev.softmax_rows(
            &mut s,
            u32_of(b * heads * n, "attention: rows")?,
            n as u32,
            1.0 / (dh as f32).sqrt(),
        )?;
        // Oᵀ (B, C, HW): O_hᵀ[c][i] = Σ_j V[b][h·dh + c][j] · S[z][i][j].
        let mut att = self.new_tensor(x.shape)?;
        let po = GemmParams {
            a_rs: nn,
            a_cs: 1,
            b_rs: 1,
            b_cs: nn,
            c_rs: nn,
            c_cs: 1,
            a_outer: 3 * cn,
            a_inner: dh as i64 * nn,
            b_outer: heads as i64 * nn * nn,
            b_inner: nn * nn,
            c_outer: cn,
            c_inner: dh as i64 * nn,
            m: dh as u32,
            n: n as u32,
            k: n as u32,
            zdiv: heads as u32,
            ..Default::default()
        };
        self.dev.gemm(
            &po,
            zb,
            (&qkv.buf, 2 * c * n),
            (&s, 0),
            (&mut att.buf, 0),
            None,
        )?;
        // out = x + W_o · Oᵀ + b_o.
        let mut out = self.dup(x)?;
        let pout = GemmParams {
            accumulate: 1,
            ..conv1x1(c)?
        };
        let (wo, bo) = (
            self.w(&format!("{prefix}.to_out.0.weight"))?,
            self.w(&format!("{prefix}.to_out.0.bias"))?,
        );
        self.dev.gemm(
            &pout,
            1,
            (wo, 0),
            (&att.buf, 0),
            (&mut out.buf, 0),
            Some(bo),
        )?;
        Ok(out)
    }

    fn add(&self, a: &Self::T, b: &Self::T) -> Result<Self::T> {
        if a.shape != b.shape {
            return Err(Error::shape("add (device)", a.shape, b.shape));
        }
        let mut y = self.new_tensor(a.shape)?;
        self.dev.add(&a.buf, &b.buf, &mut y.buf, a.numel())?;
        Ok(y)
    }

    fn add_channel_bias(&self, x: &mut Self::T, v: &Tensor) -> Result<()> {
        let [b, c, h, w] = x.shape;
        if v.shape != [b, c] {
            return Err(Error::shape(
                "add_channel_bias (device): v",
                [b, c],
                &v.shape,
            ));
        }
        let vb = self.dev.upload(&v.data)?;
        let n = x.numel();
        self.dev
            .add_plane(&mut x.buf, &vb, n, u32_of(h * w, "add_channel_bias: H·W")?)
    }

    fn concat(&self, a: &Self::T, b: &Self::T) -> Result<Self::T> {
        let ([bn, c1, h, w], [bn2, c2, h2, w2]) = (a.shape, b.shape);
        if (bn, h, w) != (bn2, h2, w2) {
            return Err(Error::shape(
                "concat (device): (B, ·, H, W)",
                (bn, h, w),
                (bn2, h2, w2),
            ));
        }
        let mut y = self.new_tensor([bn, c1 + c2, h, w])?;
        let n = y.numel();
        self.dev.concat(
            &a.buf,
            &b.buf,
            &mut y.buf,
            n,
            c1 as u32,
            c2 as u32,
            (h * w) as u32,
        )?;
        Ok(y)
    }

    fn upsample(&self, x: &Self::T) -> Result<Self::T> {
        let [b, c, h, w] = x.shape;
        let mut y = self.new_tensor([b, c, 2 * h, 2 * w])?;
        let n = y.numel();
        self.dev
            .upsample2x(&x.buf, &mut y.buf, n, h as u32, w as u32)?;
        Ok(y)
    }

    fn scale(&self, x: &mut Self::T, s: f64) -> Result<()> {
        let n = x.numel();
        self.dev.scale_div(&mut x.buf, n, s as f32)
    }
}

/// The U-Net on an opened GPU (weights uploaded at construction).
pub struct GpuUNet<'g> {
    #[cfg(feature = "cuda")]
    inner: DeviceUNet<'g, super::ops::CudaDev<'g>>,
    #[cfg(not(feature = "cuda"))]
    _gpu: &'g Gpu,
    #[cfg(not(feature = "cuda"))]
    _net: &'g UNet,
}

impl<'g> GpuUNet<'g> {
    pub fn new(gpu: &'g Gpu, net: &'g UNet, storage: Storage) -> Result<GpuUNet<'g>> {
        #[cfg(feature = "cuda")]
        return Ok(GpuUNet {
            inner: DeviceUNet::new(super::ops::CudaDev(gpu), net, storage)?,
        });
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (net, storage);
            gpu.unreachable()
        }
    }

    /// [`crate::fused::neural::measure_on`] on this GPU: `score`'s network must be the one this
    /// handle uploaded.
    #[allow(clippy::too_many_arguments)]
    pub fn measure(
        &self,
        score: &crate::score::unet::UNetScore,
        spec: &crate::info::InfoSpec,
        grid: &crate::diffusion::Grid,
        sampler: &crate::diffusion::SamplerKind,
        noise: crate::rng::Noise,
        n: usize,
        batch: usize,
        probes: usize,
        progress: Option<&(dyn Fn(usize) + Sync)>,
    ) -> Result<crate::info::InfoSums> {
        #[cfg(feature = "cuda")]
        return crate::fused::neural::measure_on(
            &self.inner,
            score,
            spec,
            grid,
            sampler,
            noise,
            0,
            n,
            batch,
            probes,
            progress,
        );
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (
                score, spec, grid, sampler, noise, n, batch, probes, progress,
            );
            self._gpu.unreachable()
        }
    }

    /// ε̂ for x (B, C, H, W), timesteps (B), class labels (B) where the model has classes.
    pub fn forward(&self, x: &Tensor, t: &[f32], labels: Option<&[i64]>) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        return self.inner.forward(x, t, labels);
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (x, t, labels);
            self._gpu.unreachable()
        }
    }
}
