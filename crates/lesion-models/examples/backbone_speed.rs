//! CPU throughput of the ISIC 2017 recipes' nets (the figures behind the GPU-time estimates in
//! `configs/isic2017/*.toml`): evaluation forward and training step (forward, loss, backward;
//! no optimiser update) in images per second, random weights and inputs.
//!
//! ```sh
//! source env.sh && cargo run --release -p lesion-models --example backbone_speed -- [NET…]
//! ```
//! NET: `inception-v4` (299², batch 8), `resnet101` (224², batch 8), `codella-fc` (128², batch 8;
//! 544 M parameters, ~5 GB for weights and gradients); default the first two. Threads:
//! `$LESION_BENCH_THREADS` (default 2). The allocator thresholds are those `lesion` sets
//! (`lesion_core::device`), so the figures are the binary's.
use std::time::Instant;

use lesion_models::inception_v4::{InceptionV4, DEFAULT_INPUT_SIZE};
use lesion_models::torchvision::{ResNet, ResNetDepth};
use lesion_models::{Arch, SegNetConfig};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 8;
const CLASSES: i64 = 3;
const WARMUP: usize = 1;
const STEPS: usize = 3;
const DEFAULT_THREADS: i32 = 2;
const RESNET_SIDE: i64 = 224;
const CODELLA_SIDE: i64 = 128;
/// As `lesion_core::device`: large frees stay in the heap instead of going back to the kernel.
const MALLOC_THRESHOLD_BYTES: i32 = 1 << 30;

fn images_per_s(batch: i64, mut f: impl FnMut()) -> f64 {
    for _ in 0..WARMUP {
        f();
    }
    let t = Instant::now();
    for _ in 0..STEPS {
        f();
    }
    (batch as usize * STEPS) as f64 / t.elapsed().as_secs_f64()
}

/// Evaluation forward and training step of `net` on a `side`² batch; `loss` maps outputs to a
/// scalar.
fn measure(name: &str, side: i64, net: &dyn ModuleT, vs: &VarStore, loss: fn(&Tensor) -> Tensor) {
    let x = Tensor::randn([BATCH, 3, side, side], (Kind::Float, Device::Cpu));
    let infer = images_per_s(BATCH, || {
        let _ = tch::no_grad(|| net.forward_t(&x, false));
    });
    let train = images_per_s(BATCH, || {
        for mut t in vs.trainable_variables() {
            t.zero_grad();
        }
        loss(&net.forward_t(&x, true)).backward();
    });
    println!(
        "{name}: {side}², batch {BATCH}, {} threads: inference {infer:.2} img/s, train step {train:.2} img/s",
        tch::get_num_threads()
    );
}

fn cross_entropy(logits: &Tensor) -> Tensor {
    let y = Tensor::zeros([logits.size()[0]], (Kind::Int64, Device::Cpu));
    logits.cross_entropy_for_logits(&y)
}

fn bce(logits: &Tensor) -> Tensor {
    logits.binary_cross_entropy_with_logits::<Tensor>(
        &logits.zeros_like(),
        None,
        None,
        tch::Reduction::Mean,
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: mallopt only sets glibc allocator parameters; called before libtorch starts threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_THRESHOLD_BYTES);
    }
    let threads = std::env::var("LESION_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_THREADS);
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let mut nets: Vec<String> = std::env::args().skip(1).collect();
    if nets.is_empty() {
        nets = vec!["inception-v4".into(), "resnet101".into()];
    }
    for name in nets {
        let vs = VarStore::new(Device::Cpu);
        match name.as_str() {
            "inception-v4" => {
                let net = InceptionV4::new(&vs.root(), CLASSES);
                measure(&name, DEFAULT_INPUT_SIZE, &net, &vs, cross_entropy);
            }
            "resnet101" => {
                let net = ResNet::new(&vs.root(), ResNetDepth::R101, CLASSES);
                measure(&name, RESNET_SIDE, &net, &vs, cross_entropy);
            }
            "codella-fc" => {
                let cfg = SegNetConfig {
                    arch: Arch::CodellaFc,
                    input_size: CODELLA_SIDE,
                    ..Default::default()
                };
                let net = cfg.build(&vs.root())?;
                measure(&name, CODELLA_SIDE, net.as_ref(), &vs, bce);
            }
            other => return Err(format!("unknown net {other}").into()),
        }
    }
    Ok(())
}
