//! Segmentation-informed classification data: every image's lesion mask predicted by
//! segmentation nets that never trained on it (out of fold), the lesion-centred crop drawn
//! from that mask, and the ABCD descriptors of the lesion, written as a new manifest the
//! classification commands use like any other.
//!
//! The invariant, as for stacking: a segmentation model never predicts an image that it, or
//! an image of the same duplicate group, trained on. Per image, only the given models whose
//! `split.json` training list excludes the image and its group predict it (their mean
//! probability); an image that every model trained on is an error. Which models predicted
//! each image is kept in `crops.json`; [`verify`] re-reads every model's training list and
//! refuses a set whose provenance no longer holds (a run retrained or doctored since), naming
//! the image and the model.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Device;
use tracing::{info, warn};

use lesion_core::run::{self, Split, SPLIT_FILE};
use lesion_core::{Result, TrainError};
use lesion_data::manifest::{Manifest, ManifestRow};
use lesion_seg::crop::{crop_mask, crop_to_lesion, CropSettings, PixelBox};
use lesion_seg::descriptors::{describe, DESCRIPTOR_NAMES};
use lesion_seg::predict::{
    load_model, predict_probability, to_mask, LoadedModel, PostProcess, SegTta,
};

/// Provenance file of a crop set.
pub const CROPS_FILE: &str = "crops.json";
/// The manifest of the crops.
pub const MANIFEST_FILE: &str = "manifest.csv";
/// Descriptors, one row per image: `image_id,<DESCRIPTOR_NAMES…>`.
pub const DESCRIPTORS_FILE: &str = "descriptors.csv";
const IMAGES_DIR: &str = "images";
const MASKS_DIR: &str = "masks";
/// Each crop's own part of the mask, the crop manifest's `mask_path` (for lesion pooling).
const CROP_MASKS_DIR: &str = "crop-masks";

/// One image's provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CropRecord {
    /// The segmentation run folders whose mean prediction drew this image's mask.
    pub models: Vec<PathBuf>,
    /// The crop in the original image; `None` = the mask was empty, the whole image is kept.
    pub crop: Option<PixelBox>,
    /// Descriptors could not be computed (empty or tiny mask): the row has none.
    pub no_descriptors: bool,
}

/// `crops.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CropSet {
    pub settings: CropSettings,
    pub source_manifest: Option<PathBuf>,
    pub images: BTreeMap<String, CropRecord>,
}

/// What to crop.
pub struct CropRequest<'a> {
    pub seg_runs: &'a [PathBuf],
    pub rows: &'a [ManifestRow],
    pub source_manifest: Option<&'a Path>,
    pub out: &'a Path,
    pub settings: CropSettings,
    /// Overrides each run's own `predict.tta` (e.g. `none` for speed on a large set).
    pub tta: Option<SegTta>,
    pub device: Device,
    pub progress: bool,
}

/// What the crop set holds, counted.
#[derive(Debug, Clone, Serialize)]
pub struct CropSummary {
    pub images: usize,
    pub empty_masks: usize,
    pub without_descriptors: usize,
}

/// The training ids of a run, with every id of their duplicate groups.
fn trained_on(run_dir: &Path, group_of: &HashMap<&str, &str>) -> Result<BTreeSet<String>> {
    let split: Split = run::read_json(&run_dir.join(SPLIT_FILE))?;
    let groups: BTreeSet<&str> =
        split.train.iter().map(|id| group_of.get(id.as_str()).copied().unwrap_or(id)).collect();
    let mut out: BTreeSet<String> = split.train.iter().cloned().collect();
    for (id, g) in group_of {
        if groups.contains(g) {
            out.insert((*id).to_string());
        }
    }
    Ok(out)
}

fn group_map(rows: &[ManifestRow]) -> HashMap<&str, &str> {
    rows.iter().map(|r| (r.id.as_str(), r.group.as_deref().unwrap_or(r.id.as_str()))).collect()
}

/// Checks a crop set's provenance against the models' current training lists: no image was
/// predicted by a model that trained on it or on its duplicate group.
pub fn verify(set: &CropSet, rows: &[ManifestRow]) -> Result<()> {
    let group_of = group_map(rows);
    let mut cache: BTreeMap<&Path, BTreeSet<String>> = BTreeMap::new();
    for (id, rec) in &set.images {
        for m in &rec.models {
            if !cache.contains_key(m.as_path()) {
                cache.insert(m.as_path(), trained_on(m, &group_of)?);
            }
            if cache.get(m.as_path()).is_some_and(|t| t.contains(id)) {
                return Err(TrainError::file(
                    m.join(SPLIT_FILE),
                    format!(
                        "out-of-fold masks violated: image {id} was segmented by this model, \
                         which trained on it or on its duplicate group"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Predicts every row's mask out of fold, writes `<out>/images/<id>.png` (the crop),
/// `<out>/masks/<id>_segmentation.png` (the whole image's mask), `<out>/crop-masks/<id>.png`
/// (the crop's part of it), `manifest.csv` (the rows with the crops as images and the crops'
/// masks as masks), `descriptors.csv` and `crops.json`, then verifies the provenance.
pub fn crop_rows(req: &CropRequest<'_>) -> Result<CropSummary> {
    req.settings.validate()?;
    if req.seg_runs.is_empty() {
        return Err(TrainError::Config("no segmentation runs to draw the masks".into()));
    }
    let group_of = group_map(req.rows);
    let mut models: Vec<(PathBuf, LoadedModel, BTreeSet<String>)> = Vec::new();
    for r in req.seg_runs {
        if !run::is_complete(r) {
            return Err(TrainError::file(r, "not a complete segmentation run (no COMPLETE.json)"));
        }
        let trained = trained_on(r, &group_of)?;
        let mut model = load_model(r, req.device)?;
        if let Some(t) = req.tta {
            model.tta = t;
        }
        models.push((r.clone(), model, trained));
    }
    let images_dir = req.out.join(IMAGES_DIR);
    let masks_dir = req.out.join(MASKS_DIR);
    let mut set = CropSet {
        settings: req.settings,
        source_manifest: req.source_manifest.map(Path::to_path_buf),
        images: BTreeMap::new(),
    };
    let mut out_rows = Vec::with_capacity(req.rows.len());
    let mut desc_rows: Vec<(String, Vec<f64>)> = Vec::new();
    let mut empty = 0;
    let bar = if req.progress {
        indicatif::ProgressBar::new(req.rows.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    for row in req.rows {
        let chosen: Vec<&(PathBuf, LoadedModel, BTreeSet<String>)> =
            models.iter().filter(|(_, _, t)| !t.contains(&row.id)).collect();
        if chosen.is_empty() {
            return Err(TrainError::Config(format!(
                "{}: every segmentation model trained on this image or its duplicate group \
                 (e.g. {}); give models trained without it (one per fold)",
                row.id,
                models.first().map(|m| m.0.display().to_string()).unwrap_or_default()
            )));
        }
        let img = lesion_data::io::load_rgb(&row.image_path)?;
        let nets: Vec<&LoadedModel> = chosen.iter().map(|(_, m, _)| m).collect();
        let prob = predict_probability(&nets, &img, &row.image_path, req.device)?;
        let mask = to_mask(&prob, PostProcess { largest_component: true, fill_holes: true })?;
        let (crop, b) = crop_to_lesion(&img, &mask, req.settings)?;
        if b.is_none() {
            empty += 1;
            warn!(image = %row.id, "predicted mask is empty: the whole image is kept");
        }
        let descriptors = describe(&img, &mask).ok();
        let lesion_of_crop = crop_mask(&mask, b);
        let crop_path = images_dir.join(format!("{}.png", row.id));
        lesion_data::io::save_png_atomic(
            &crop_path,
            &image::DynamicImage::ImageRgb8(crop.clone()),
        )?;
        lesion_data::io::save_png_atomic(
            &masks_dir.join(format!("{}{}", row.id, lesion_seg::predict::SUBMISSION_SUFFIX)),
            &image::DynamicImage::ImageLuma8(mask),
        )?;
        let crop_mask_path = req.out.join(CROP_MASKS_DIR).join(format!("{}.png", row.id));
        lesion_data::io::save_png_atomic(
            &crop_mask_path,
            &image::DynamicImage::ImageLuma8(lesion_of_crop),
        )?;
        let abs = std::fs::canonicalize(&crop_path).map_err(|e| TrainError::file(&crop_path, e))?;
        let abs_mask = std::fs::canonicalize(&crop_mask_path)
            .map_err(|e| TrainError::file(&crop_mask_path, e))?;
        let mut r = row.clone();
        r.content_hash = lesion_data::io::content_hash(&abs)?;
        r.image_path = abs;
        r.mask_path = Some(abs_mask);
        r.width = crop.width();
        r.height = crop.height();
        out_rows.push(r);
        if let Some(d) = &descriptors {
            desc_rows.push((row.id.clone(), d.to_vec()));
        }
        set.images.insert(
            row.id.clone(),
            CropRecord {
                models: chosen.iter().map(|(p, _, _)| p.clone()).collect(),
                crop: b,
                no_descriptors: descriptors.is_none(),
            },
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    verify(&set, req.rows)?;
    Manifest::new(out_rows).write_csv(&req.out.join(MANIFEST_FILE))?;
    write_descriptors(&req.out.join(DESCRIPTORS_FILE), &desc_rows)?;
    run::write_json(&req.out.join(CROPS_FILE), &set)?;
    let summary = CropSummary {
        images: req.rows.len(),
        empty_masks: empty,
        without_descriptors: req.rows.len() - desc_rows.len(),
    };
    info!(?summary, "crops -> {}", req.out.display());
    Ok(summary)
}

/// Reads a crop set's provenance and verifies it against `rows`' groups.
pub fn read_and_verify(dir: &Path, rows: &[ManifestRow]) -> Result<CropSet> {
    let set: CropSet = run::read_json(&dir.join(CROPS_FILE))?;
    verify(&set, rows)?;
    Ok(set)
}

/// Writes `image_id,<DESCRIPTOR_NAMES…>` atomically.
pub fn write_descriptors(path: &Path, rows: &[(String, Vec<f64>)]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| TrainError::file(path, e);
    let mut header = vec!["image_id".to_string()];
    header.extend(DESCRIPTOR_NAMES.iter().map(|s| s.to_string()));
    w.write_record(&header).map_err(err)?;
    for (id, v) in rows {
        let mut rec = vec![id.clone()];
        rec.extend(v.iter().map(|x| format!("{x:.8}")));
        w.write_record(&rec).map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| TrainError::file(path, e.to_string()))?;
    run::atomic_write(path, &bytes)
}
