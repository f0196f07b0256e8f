//! `[adam] cosine_epochs` / `min_lr` follow `torch.optim.lr_scheduler.CosineAnnealingLR`
//! stepped once per epoch: the fixture `tests/fixtures/cosine_lr.json` is written by
//! `tools/fixtures/make_cosine_fixture.py` (torch 2.11). The rate of every epoch up to the
//! schedule's end must match to 1e-12 relative; past the end lesion stays at the floor.
use lesion_core::optim::{AdamConfig, OptimizerConfigs, OptimizerKind, RmsPropConfig, SgdConfig};
use serde::Deserialize;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cosine_lr.json");
const RELATIVE_TOLERANCE: f64 = 1e-12;

#[derive(Deserialize)]
struct Case {
    lr: f64,
    min_lr: f64,
    cosine_epochs: usize,
    rates: Vec<f64>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[test]
fn cosine_schedule_equals_torch_cosine_annealing() {
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    let fixture: Fixture = serde_json::from_str(&text).expect("fixture JSON");
    assert!(!fixture.cases.is_empty());
    for case in &fixture.cases {
        let adam = AdamConfig {
            lr: case.lr,
            min_lr: case.min_lr,
            cosine_epochs: case.cosine_epochs,
            ..Default::default()
        };
        let configs =
            OptimizerConfigs { adam, rmsprop: RmsPropConfig::default(), sgd: SgdConfig::default() };
        assert_eq!(case.rates.len(), case.cosine_epochs + 1);
        for (epoch, &want) in case.rates.iter().enumerate() {
            for kind in [OptimizerKind::Adam, OptimizerKind::Adamw] {
                let got = kind.scheduled_lr(&configs, epoch).expect("a cosine schedule");
                assert!(
                    (got - want).abs() <= RELATIVE_TOLERANCE * want.abs().max(f64::MIN_POSITIVE),
                    "lr {} → {} over {} epochs, epoch {epoch}: {got} vs torch {want}",
                    case.lr,
                    case.min_lr,
                    case.cosine_epochs
                );
            }
        }
        let after = adam.lr_at(case.cosine_epochs + 5).expect("a cosine schedule");
        assert_eq!(after, case.min_lr, "past its end the schedule stays at the floor");
    }
    // No schedule: Adam keeps whatever rate it runs at.
    let constant = OptimizerConfigs {
        adam: AdamConfig::default(),
        rmsprop: RmsPropConfig::default(),
        sgd: SgdConfig::default(),
    };
    assert_eq!(OptimizerKind::Adamw.scheduled_lr(&constant, 3), None);
}
