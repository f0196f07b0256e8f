//! The example plan shipped in `configs/` expands as its header says: 8 PH2 five-fold CVs
//! (input size × class weighting × 2 seeds) over the Lite0 recipe, with the archive sample as
//! the external set. The manifest is replaced (as `--manifest` does), since the plan's own
//! `../ph2.csv` is made by the user.
use std::collections::BTreeSet;
use std::path::PathBuf;

use lesion_sweep::plan::{self, Task};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/ph2-sweep.toml")
}

#[test]
fn the_example_plan_expands_into_eight_distinct_cv_cells() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("ph2.csv");
    std::fs::write(&manifest, "id,image_path,diagnosis\nIMD002,a.bmp,melanoma\n").unwrap();
    let plan = plan::load(&example(), &[manifest]).unwrap();
    let cells = &plan.record.cells;
    assert_eq!(plan.record.task, Task::ClsCv);
    assert_eq!(cells.len(), 8, "2 input sizes × 2 class weightings × 2 seeds");
    let ids: BTreeSet<_> = cells.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(ids.len(), cells.len(), "ids are distinct");
    assert!(cells.iter().all(|c| c.folds == Some(5) && c.fold_seed == Some(0)));
    let sizes: BTreeSet<_> =
        cells.iter().map(|c| c.overrides["model.input_size"].to_string()).collect();
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), ["160", "192"]);
    let seeds: BTreeSet<_> = cells.iter().filter_map(|c| c.seed).collect();
    assert_eq!(seeds.into_iter().collect::<Vec<_>>(), [0, 1]);
    let external = plan.record.external.as_ref().unwrap();
    assert!(external.ends_with("isic-archive.csv"), "{}", external.display());
    // Every cell's config is the recipe's with its overrides: the base's other keys stay.
    for text in &plan.configs {
        assert!(text.contains("variant = \"lite0\""), "{text}");
        assert!(text.contains("epochs = 8"), "{text}");
    }
}
