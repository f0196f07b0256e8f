//! Probe of EfficientNet-Lite0 eval-forward speed under different settings (diagnostic).
use std::time::Instant;

use lesion_models::efficientnet::{EfficientNetConfig, HeadSpec, LiteVariant};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

fn time(label: &str, f: impl Fn()) {
    for _ in 0..2 {
        f();
    }
    let t = Instant::now();
    let n = 5;
    for _ in 0..n {
        f();
    }
    println!("{label}: {:.2} img/s", (n * 16) as f64 / t.elapsed().as_secs_f64());
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROBE_MALLOPT").is_some() {
        let one_gib = 1 << 30;
        // SAFETY: mallopt only sets allocator parameters; called before any other thread runs.
        let (a, b) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_THRESHOLD, one_gib),
                libc::mallopt(libc::M_TRIM_THRESHOLD, one_gib),
            )
        };
        println!("mallopt returned {a} {b}");
    }
    tch::manual_seed(0);
    let cfg = EfficientNetConfig {
        variant: LiteVariant::Lite0,
        head: HeadSpec::Classes(3),
        image_size: Some(224),
        ..Default::default()
    };
    let mut vs = VarStore::new(Device::Cpu);
    let net = cfg.build(&vs.root())?;
    let x = Tensor::randn([16, 3, 224, 224], (Kind::Float, Device::Cpu));
    for round in 0..4 {
        time(&format!("round {round}: no_grad, requires_grad vars"), || {
            tch::no_grad(|| {
                let _ = net.forward_t(&x, false);
            })
        });
    }
    vs.freeze();
    time("no_grad, frozen vars", || {
        tch::no_grad(|| {
            let _ = net.forward_t(&x, false);
        })
    });
    Ok(())
}
