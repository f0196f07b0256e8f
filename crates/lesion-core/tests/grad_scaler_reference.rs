//! `GradScaler` replays `torch.amp.GradScaler` (torch 2.11, CPU) step for step: the fixture
//! `tests/fixtures/grad_scaler.json` is written by `tools/fixtures/make_grad_scaler_fixture.py`
//! (scripted finite / inf / NaN / overflowing-once-scaled gradients, tiny growth intervals,
//! growth capped at float32's max). Scales, growth trackers, skipped steps and the parameters
//! after each SGD step must match exactly.
use lesion_core::optim::{zero_grad, Optimizer, Sgd, SgdConfig};
use lesion_core::precision::{GradScaler, GradScalerConfig, GradScalerState};
use serde::Deserialize;
use tch::{nn::VarStore, Device, Kind, Tensor};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grad_scaler.json");

/// A gradient entry: a number, or "inf" / "-inf" / "nan" (JSON has none of these).
#[derive(Deserialize)]
#[serde(untagged)]
enum Num {
    Finite(f64),
    Special(String),
}

impl Num {
    fn value(&self) -> f32 {
        match self {
            Num::Finite(x) => *x as f32,
            Num::Special(s) => match s.as_str() {
                "inf" => f32::INFINITY,
                "-inf" => f32::NEG_INFINITY,
                "nan" => f32::NAN,
                other => panic!("unknown special value {other:?}"),
            },
        }
    }
}

#[derive(Deserialize)]
struct Step {
    skipped: bool,
    scale: f64,
    growth_tracker: i64,
    param: Vec<f32>,
}

#[derive(Deserialize)]
struct Scenario {
    name: String,
    init_scale: f64,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: i64,
    lr: f64,
    param0: Vec<f32>,
    grads: Vec<Vec<Num>>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Fixture {
    scenarios: Vec<Scenario>,
}

#[test]
fn grad_scaler_matches_torch_step_for_step() {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fixture.scenarios.len(), 2);
    for sc in &fixture.scenarios {
        let vs = VarStore::new(Device::Cpu);
        let p = vs.root().var_copy("p", &Tensor::from_slice(&sc.param0));
        let mut sgd = Sgd::new(SgdConfig {
            lr: sc.lr,
            momentum: 0.0,
            weight_decay: 0.0,
            ..Default::default()
        });
        let config = GradScalerConfig {
            init_scale: sc.init_scale,
            growth_factor: sc.growth_factor,
            backoff_factor: sc.backoff_factor,
            growth_interval: sc.growth_interval,
        };
        let mut scaler = GradScaler::with_config(config, true);
        assert_eq!(sc.grads.len(), sc.steps.len());
        let mut skips = 0;
        for (k, (g, want)) in sc.grads.iter().zip(&sc.steps).enumerate() {
            let g: Vec<f32> = g.iter().map(Num::value).collect();
            zero_grad(&vs);
            let loss = (&p * Tensor::from_slice(&g)).sum(Kind::Float);
            scaler.scale(&loss).backward();
            let finite = scaler.unscale_and_check(&vs);
            if finite {
                sgd.step(&vs);
            }
            scaler.update(!finite);
            let at = format!("{} step {k}", sc.name);
            assert_eq!(!finite, want.skipped, "{at}: skipped");
            assert_eq!(scaler.scale_value(), want.scale, "{at}: scale");
            assert_eq!(
                scaler.state,
                GradScalerState { scale: want.scale as f32, growth_tracker: want.growth_tracker },
                "{at}: state"
            );
            assert_eq!(Vec::<f32>::try_from(&p).unwrap(), want.param, "{at}: parameters");
            skips += usize::from(want.skipped);
        }
        // The script exercises both outcomes.
        assert!(skips > 0 && skips < sc.steps.len(), "{}", sc.name);
    }
}
