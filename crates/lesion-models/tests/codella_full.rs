//! The paper's codella-fc at full size: exactly 544,269,921 parameters at 128², and one
//! training step at batch 1 runs (peak memory printed). ≈9 GB of RAM: weights, gradients and
//! Adam's two moments for 544 M parameters.
use lesion_models::{trainable_parameter_count, Arch, SegNetConfig};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 =
        s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[test]
fn codella_fc_full_size_builds_and_steps() {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = SegNetConfig { arch: Arch::CodellaFc, input_size: 128, ..Default::default() };
    let net = cfg.build(&vs.root()).unwrap();
    assert_eq!(trainable_parameter_count(&vs), 544_269_921);

    let mut opt = nn::Adam::default().build(&vs, 1e-5).unwrap();
    let x = Tensor::randn([1, 3, 128, 128], (Kind::Float, Device::Cpu));
    let y = Tensor::rand([1, 1, 128, 128], (Kind::Float, Device::Cpu)).gt(0.5).to_kind(Kind::Float);
    let before = vs.variables()["fc1.weight"].copy();
    let t = std::time::Instant::now();
    let logits = net.forward_t(&x, true);
    assert_eq!(logits.size(), vec![1, 1, 128, 128]);
    let loss =
        logits.binary_cross_entropy_with_logits::<Tensor>(&y, None, None, tch::Reduction::Mean);
    opt.backward_step(&loss);
    let changed = (&vs.variables()["fc1.weight"] - before).abs().max().double_value(&[]);
    assert!(changed > 0.0, "the FC bottleneck did not move");
    println!(
        "codella-fc 128², batch 1: one training step in {:.1}s, peak RSS {:.0} MiB",
        t.elapsed().as_secs_f64(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
}
