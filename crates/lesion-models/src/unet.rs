//! Ronneberger's U-Net with BatchNorm: `depth` poolings, double 3×3 conv per level, 2×2
//! transposed-conv upsampling, skip concatenation. The small CPU default.
use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::blocks::DoubleConvBn;
use crate::SegNetConfig;

#[derive(Debug)]
pub struct Unet {
    downs: Vec<DoubleConvBn>,
    bottom: DoubleConvBn,
    ups: Vec<nn::ConvTranspose2D>,
    up_convs: Vec<DoubleConvBn>,
    head: nn::Conv2D,
    dropout: f64,
}

impl Unet {
    pub fn new(vs: &nn::Path, cfg: &SegNetConfig) -> Self {
        let widths: Vec<i64> = (0..=cfg.depth).map(|l| cfg.ch(cfg.base << l)).collect();
        let mut downs = Vec::with_capacity(cfg.depth);
        let mut c_in = 3;
        for (l, &w) in widths.iter().take(cfg.depth).enumerate() {
            downs.push(DoubleConvBn::new(&(vs / format!("down{}", l + 1)), c_in, w));
            c_in = w;
        }
        let bottom = DoubleConvBn::new(&(vs / "bottom"), c_in, widths[cfg.depth]);
        let up_cfg = nn::ConvTransposeConfig { stride: 2, ..Default::default() };
        let mut ups = Vec::with_capacity(cfg.depth);
        let mut up_convs = Vec::with_capacity(cfg.depth);
        for l in (0..cfg.depth).rev() {
            let name = format!("up{}", cfg.depth - l);
            ups.push(nn::conv_transpose2d(
                vs / format!("{name}_tconv"),
                widths[l + 1],
                widths[l],
                2,
                up_cfg,
            ));
            up_convs.push(DoubleConvBn::new(&(vs / name), 2 * widths[l], widths[l]));
        }
        let head = nn::conv2d(vs / "head", widths[0], 1, 1, Default::default());
        Self { downs, bottom, ups, up_convs, head, dropout: cfg.dropout }
    }
}

impl ModuleT for Unet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut skips = Vec::with_capacity(self.downs.len());
        let mut xs = xs.shallow_clone();
        for down in &self.downs {
            let s = down.forward_t(&xs, train);
            xs = s.max_pool2d_default(2);
            skips.push(s);
        }
        // Dropout at the bottleneck only, as in the original U-Net.
        xs = self.bottom.forward_t(&xs, train).dropout(self.dropout, train);
        for ((up, conv), skip) in self.ups.iter().zip(&self.up_convs).zip(skips.iter().rev()) {
            xs = conv.forward_t(&Tensor::cat(&[xs.apply(up), skip.shallow_clone()], 1), train);
        }
        xs.apply(&self.head)
    }
}
