//! `lesion data …` (import, assemble, recod, dedup, audit, split, check) and `lesion bench dedup`.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lesion_data::import::{import, ImportOptions, SourceKind};
use lesion_data::manifest::Manifest;
use lesion_data::split::{SplitKind, SplitReport};
use lesion_dedup::fingerprint::SymmetryMode;
use lesion_dedup::pipeline::{self, Decisions, DedupConfig};

use crate::GlobalOpts;

/// Exit status of `lesion data check` when TEST is contaminated.
const CONTAMINATED_EXIT: i32 = 2;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Import a data set as its publisher ships it into a manifest CSV.
    ///
    /// KIND is one of isic2016, isic2017, isic2018 (Task 1-2 segmentation), isic2018-task3 and
    /// isic2019 (one-hot classification ground truth, plus the 2019 metadata / 2018 lesion
    /// groupings when present), ph2, folder, or auto (guess from the layout). Every image and
    /// mask is decoded and checked; a bad file stops the import with its name and problem
    /// unless --skip-bad is given.
    Import(ImportArgs),
    /// Merge several sources into one manifest by a TOML recipe (filters, weights, subsets).
    Assemble(AssembleArgs),
    /// Read the RECOD Titans' lists (deploy2017.txt, diff-semi.txt): counts and a manifest.
    Recod(RecodArgs),
    /// Exact and near duplicates: groups, pair scores, review sheet, decisions template.
    Dedup(DedupArgs),
    /// Metadata distributions per source and class; labels nearly determined by a value;
    /// duplicate groups with conflicting labels.
    Audit(AuditArgs),
    /// Stratified, group-aware hold-out or k-fold split.
    Split(SplitArgs),
    /// Contamination check: images of TEST with an exact or near duplicate in TRAIN
    /// (exits non-zero when any is found).
    Check(CheckArgs),
    /// Draw a seeded synthetic dermoscopy set (images, masks, diagnoses) and its manifest
    /// (`OUT/manifest.csv`): data for trying commands and for tests.
    Synth(SynthArgs),
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder (`images/`, `masks/`, `manifest.csv`).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 24)]
    pub count: usize,
    /// Side of the square images, in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A data set layout, or `auto` to detect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Auto,
    Known(SourceKind),
}

impl std::str::FromStr for Layout {
    type Err = lesion_data::DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Layout::Auto);
        }
        s.parse::<SourceKind>().map(Layout::Known).map_err(|_| {
            lesion_data::DataError::InvalidArgument(format!(
                "unknown layout {s:?} (expected one of auto, {})",
                SourceKind::names()
            ))
        })
    }
}

#[derive(Args)]
pub struct ImportArgs {
    /// Layout: isic2016 | isic2017 | isic2018 | isic2018-task3 | isic2019 | ph2 | folder | auto.
    pub kind: Layout,
    /// The data set's root folder (e.g. the folder holding `PH2 Dataset images`).
    pub root: PathBuf,
    /// Output manifest CSV.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Report bad files and go on instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// `folder` layout: the folder of masks (matched to images by file stem).
    #[arg(long)]
    pub mask_dir: Option<PathBuf>,
    /// Fail (or skip, with --skip-bad) images that have no mask.
    #[arg(long)]
    pub require_masks: bool,
    /// Accept masks whose values are only 0 and 1, reading 1 as lesion (without it such a mask
    /// is refused: read as lesion > 127 it would be empty).
    #[arg(long = "masks-01")]
    pub masks_01: bool,
}

pub fn run(cmd: DataCommand, g: &GlobalOpts) -> Result<()> {
    match cmd {
        DataCommand::Import(a) => {
            let report = import_any(
                a.kind,
                &a.root,
                &ImportOptions {
                    skip_bad: a.skip_bad,
                    mask_dir: a.mask_dir,
                    require_masks: a.require_masks,
                    masks_01: a.masks_01,
                },
                g,
            )?;
            report
                .manifest
                .write_csv(&a.out)
                .with_context(|| format!("writing {}", a.out.display()))?;
            println!("{} images -> {}", report.manifest.rows.len(), a.out.display());
            Ok(())
        }
        DataCommand::Assemble(a) => assemble(a),
        DataCommand::Recod(a) => recod(a),
        DataCommand::Dedup(a) => dedup(a, g),
        DataCommand::Audit(a) => audit(a),
        DataCommand::Split(a) => split(a),
        DataCommand::Check(a) => check(a, g),
        DataCommand::Synth(a) => synth(a),
    }
}

fn synth(a: SynthArgs) -> Result<()> {
    use lesion_data::synth::{generate, SynthConfig};
    let cfg = SynthConfig { count: a.count, width: a.size, height: a.size, seed: a.seed };
    let m = generate(&cfg, &a.out)?;
    let path = a.out.join("manifest.csv");
    Manifest::new(m.rows)
        .write_csv(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{} synthetic images -> {}", a.count, path.display());
    Ok(())
}

/// Imports with `kind` (or `auto`), printing bad files and table rows without images.
pub fn import_any(
    layout: Layout,
    root: &Path,
    opts: &ImportOptions,
    _g: &GlobalOpts,
) -> Result<lesion_data::import::ImportReport> {
    let kind = match layout {
        Layout::Auto => SourceKind::detect(root)?,
        Layout::Known(k) => k,
    };
    let report = import(kind, root, opts)?;
    for b in &report.bad {
        eprintln!("skipped {}: {}", b.path.display(), b.problem);
    }
    if !report.table_rows_without_image.is_empty() {
        eprintln!(
            "{} rows of the data set's table have no image here (first: {}); they are left out",
            report.table_rows_without_image.len(),
            report.table_rows_without_image.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(first) = report.empty_masks.first() {
        eprintln!(
            "warning: {} masks have no lesion pixel (first: {}); imported as empty",
            report.empty_masks.len(),
            first.display()
        );
    }
    Ok(report)
}

#[derive(Args)]
pub struct AssembleArgs {
    /// The recipe (TOML; see `lesion_data::recipe`).
    pub recipe: PathBuf,
    /// Output manifest CSV (kept rows).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Also write every row, kept or dropped, with its deciding rule.
    #[arg(long)]
    pub all: Option<PathBuf>,
}

#[derive(Args)]
pub struct RecodArgs {
    /// deploy2017.txt
    pub deploy: PathBuf,
    /// diff-semi.txt (ids removed from deploy to make semi).
    pub diff_semi: PathBuf,
    /// Write the deploy list as a manifest (subsets column: deploy;semi), groups = case; every
    /// listed image must be in --images (sizes and content hashes are read from it).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Folder of the images for the manifest's paths (default: the list's folder + images).
    #[arg(long)]
    pub images: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct DedupOpts {
    /// Hamming radius of the perceptual-hash candidate search (64-bit hashes).
    #[arg(long, default_value_t = pipeline::DEFAULT_RADIUS)]
    pub radius: u32,
    /// Every candidate pair within this many bits is found for certain; pairs up to --radius
    /// are found when one chunk of the hash is near enough (equal to --radius: exact search,
    /// slow on large sets).
    #[arg(long, default_value_t = pipeline::DEFAULT_PROBE_RADIUS)]
    pub probe_radius: u32,
    /// Confirmation score threshold.
    #[arg(long, default_value_t = pipeline::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Symmetries searched: none | flips | dihedral (flips and 90° rotations).
    #[arg(long, default_value = "flips")]
    pub symmetry: SymmetryMode,
    /// Fingerprint cache folder (default $LESION_CACHE or .cache/lesion).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// No fingerprint cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl DedupOpts {
    fn config(&self, g: &GlobalOpts) -> Result<DedupConfig> {
        let symmetry = self.symmetry;
        let cache_dir = (!self.no_cache).then(|| {
            self.cache.clone().unwrap_or_else(lesion_data::cache::PreprocessCache::default_root)
        });
        Ok(DedupConfig {
            radius: self.radius,
            probe_radius: self.probe_radius,
            threshold: self.threshold,
            symmetry,
            cache_dir,
            progress: !g.quiet,
        })
    }
}

#[derive(Args)]
pub struct DedupArgs {
    pub manifest: PathBuf,
    /// Output folder: groups.csv, pairs.csv, review.html (with its thumbs/), decisions-template.csv.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Decisions CSV (id_a,id_b,decision = confirmed|rejected) from an earlier review.
    #[arg(long)]
    pub decisions: Option<PathBuf>,
    /// Also write the manifest with each duplicate group in its `group` column (rows already
    /// grouped keep their group; a dedup group joining several gets the first).
    #[arg(long)]
    pub grouped: Option<PathBuf>,
    #[command(flatten)]
    pub opts: DedupOpts,
}

#[derive(Args)]
pub struct AuditArgs {
    pub manifest: PathBuf,
    /// groups.csv from `lesion data dedup`, for conflicting-label checks.
    #[arg(long)]
    pub groups: Option<PathBuf>,
}

#[derive(Args)]
pub struct SplitArgs {
    pub manifest: PathBuf,
    /// Hold-out test fraction (ignored with --folds).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// k-fold instead of hold-out.
    #[arg(long)]
    pub folds: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output: the manifest with a `fold` column (hold-out: train / test).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Hold-out only: also write train and test manifests next to OUT.
    #[arg(long)]
    pub write_parts: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    pub train: PathBuf,
    pub test: PathBuf,
    #[command(flatten)]
    pub opts: DedupOpts,
}

#[derive(Args)]
pub struct DedupBenchArgs {
    /// PH2 folder (originals; default $LESION_PH2).
    #[arg(long)]
    pub ph2: Option<PathBuf>,
    /// Transformed copies per original.
    #[arg(long, default_value_t = 3)]
    pub copies: usize,
    #[arg(long, default_value_t = 2017)]
    pub seed: u64,
    /// Synthetic items for the search-speed benchmark (0 skips it); each stores 10 hashes and looks up 4.
    #[arg(long, default_value_t = 1_000_000)]
    pub hashes: usize,
    /// Radius of the synthetic search (default: the tool's).
    #[arg(long, default_value_t = pipeline::DEFAULT_RADIUS)]
    pub search_radius: u32,
    /// Probe radius of the synthetic search (default: the tool's).
    #[arg(long, default_value_t = pipeline::DEFAULT_PROBE_RADIUS)]
    pub search_probe_radius: u32,
    /// Folder for the copies (default: a temporary folder).
    #[arg(long)]
    pub work: Option<PathBuf>,
}

fn read_manifest(p: &Path) -> Result<Manifest> {
    Manifest::read_csv(p).with_context(|| format!("reading manifest {}", p.display()))
}

fn assemble(a: AssembleArgs) -> Result<()> {
    let recipe = lesion_data::recipe::Recipe::read(&a.recipe)?;
    let asm = lesion_data::recipe::assemble(&recipe)?;
    asm.kept.write_csv(&a.out)?;
    if let Some(all) = &a.all {
        let mut rows = asm.kept.rows.clone();
        rows.extend(asm.dropped.iter().cloned());
        Manifest::new(rows).write_csv(all)?;
    }
    print!("{asm}");
    println!("{} kept, {} dropped -> {}", asm.kept.len(), asm.dropped.len(), a.out.display());
    Ok(())
}

fn recod(a: RecodArgs) -> Result<()> {
    let sets = lesion_data::recod::read_sets(&a.deploy, &a.diff_semi)?;
    let s = lesion_data::recod::summarize(&sets);
    let t = s.deploy.class_totals();
    println!(
        "deploy: {} images ({} melanoma / {} keratosis / {} other), {} case groups",
        s.deploy.total(),
        t[0],
        t[1],
        t[2],
        s.groups
    );
    print!("{}", s.deploy);
    let t = s.semi.class_totals();
    println!(
        "\nsemi: {} images ({} melanoma / {} keratosis / {} other)",
        s.semi.total(),
        t[0],
        t[1],
        t[2]
    );
    print!("{}", s.semi);
    if let Some(out) = &a.out {
        let images =
            a.images.clone().unwrap_or_else(|| lesion_data::recod::default_images_dir(&a.deploy));
        let mut m = lesion_data::recod::to_manifest(&sets, &images);
        // Sizes and content hashes come from the images (the cache is keyed by the hash).
        lesion_data::recod::read_image_facts(&mut m)
            .with_context(|| format!("reading the listed images in {}", images.display()))?;
        m.write_csv(out)?;
        println!("manifest -> {}", out.display());
    }
    Ok(())
}

fn dedup(a: DedupArgs, g: &GlobalOpts) -> Result<()> {
    let m = read_manifest(&a.manifest)?;
    let cfg = a.opts.config(g)?;
    let decisions = match &a.decisions {
        Some(p) => pipeline::read_decisions(p)?,
        None => Decisions::new(),
    };
    let (fps, keys, stats) = pipeline::fingerprint_rows(&m.rows, &cfg)?;
    let report = pipeline::find_duplicates(&m.rows, &fps, &keys, &cfg, &decisions);
    let out = &a.out;
    lesion_dedup::report::write_groups(&out.join("groups.csv"), &m.rows, &report)?;
    lesion_dedup::report::write_pairs(&out.join("pairs.csv"), &m.rows, &report)?;
    lesion_dedup::report::write_review_html(
        &out.join("review.html"),
        &m.rows,
        &report,
        cfg.threshold,
    )?;
    lesion_dedup::report::write_decisions_template(
        &out.join("decisions-template.csv"),
        &m.rows,
        &report,
    )?;
    let dups = report.pairs.iter().filter(|p| p.duplicate).count();
    println!(
        "{} images hashed ({} from cache) in {:.1}s ({:.0} images/s); {} candidate pairs in {:.2}s, confirmed in {:.1}s",
        stats.images, stats.from_cache, stats.seconds, stats.images as f64 / stats.seconds.max(1e-9), report.candidates, report.search_seconds, report.confirm_seconds
    );
    println!("{} duplicate pairs, {} groups -> {}", dups, report.groups.len(), out.display());
    if let Some(gp) = &a.grouped {
        let mut rows = m.rows.clone();
        for (k, members) in report.groups.iter().enumerate() {
            let name = members
                .iter()
                .find_map(|&i| rows[i].group.clone())
                .unwrap_or_else(|| format!("dup{}", k + 1));
            for &i in members {
                rows[i].group = Some(name.clone());
            }
        }
        Manifest::new(rows).write_csv(gp)?;
    }
    Ok(())
}

fn audit(a: AuditArgs) -> Result<()> {
    let m = read_manifest(&a.manifest)?;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    if let Some(gp) = &a.groups {
        let index: std::collections::HashMap<&str, usize> =
            m.rows.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
        let mut by: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        let mut rd =
            csv::Reader::from_path(gp).with_context(|| format!("reading {}", gp.display()))?;
        for (i, rec) in rd.records().enumerate() {
            let rec = rec.with_context(|| format!("{}: line {}", gp.display(), i + 2))?;
            if let (Some(g), Some(&row)) = (rec.get(0), rec.get(1).and_then(|id| index.get(id))) {
                by.entry(g.to_string()).or_default().push(row);
            }
        }
        groups = by.into_values().collect();
    }
    print!("{}", lesion_data::audit::audit(&m.rows, &groups));
    Ok(())
}

fn split(a: SplitArgs) -> Result<()> {
    let m = read_manifest(&a.manifest)?;
    let kind = match a.folds {
        Some(k) => SplitKind::KFold { k },
        None => SplitKind::Holdout { test_fraction: a.test_fraction },
    };
    let s = lesion_data::split::split(&m.rows, kind, a.seed)?;
    print!("{}", SplitReport::of(&m.rows, &s));
    let name = |f: usize| match kind {
        SplitKind::Holdout { .. } => ["train", "test"][f.min(1)].to_string(),
        SplitKind::KFold { .. } => f.to_string(),
    };
    let mut rows = m.rows.clone();
    for (r, &f) in rows.iter_mut().zip(&s.fold_of) {
        r.set_meta("fold", name(f));
    }
    Manifest::new(rows.clone()).write_csv(&a.out)?;
    if a.write_parts && matches!(kind, SplitKind::Holdout { .. }) {
        for part in ["train", "test"] {
            let p = a.out.with_file_name(format!(
                "{}-{part}.csv",
                a.out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
            ));
            Manifest::new(
                rows.iter().filter(|r| r.meta_value("fold") == Some(part)).cloned().collect(),
            )
            .write_csv(&p)?;
            println!("{part} -> {}", p.display());
        }
    }
    println!("split -> {}", a.out.display());
    Ok(())
}

fn check(a: CheckArgs, g: &GlobalOpts) -> Result<()> {
    let train = read_manifest(&a.train)?;
    let test = read_manifest(&a.test)?;
    let cfg = a.opts.config(g)?;
    let found = lesion_dedup::check::check(&train.rows, &test.rows, &cfg)?;
    for c in &found {
        println!(
            "CONTAMINATED {} ~ {} ({}, score {:.3})",
            c.test_id,
            c.train_id,
            c.kind.as_str(),
            c.score
        );
    }
    let n: std::collections::BTreeSet<&str> = found.iter().map(|c| c.test_id.as_str()).collect();
    if n.is_empty() {
        println!(
            "clean: no image of {} has a duplicate in {}",
            a.test.display(),
            a.train.display()
        );
        Ok(())
    } else {
        eprintln!("{} of {} test images have a duplicate in train", n.len(), test.len());
        // Distinct from the generic error status 1, so scripts can tell contamination apart.
        std::process::exit(CONTAMINATED_EXIT)
    }
}

/// `lesion bench dedup`.
pub fn bench_dedup(a: DedupBenchArgs) -> Result<()> {
    let root = a
        .ph2
        .clone()
        .or_else(|| std::env::var_os("LESION_PH2").map(PathBuf::from))
        .context("give --ph2 or set LESION_PH2")?;
    let rep = import(SourceKind::Ph2, &root, &ImportOptions::default())?;
    let tmp;
    let work = match &a.work {
        Some(w) => w.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("lesion-bench-dedup-{}", std::process::id()));
            tmp
        }
    };
    let cfg = DedupConfig { progress: true, ..Default::default() };
    let q = lesion_dedup::bench::quality(&rep.manifest.rows, a.copies, a.seed, &work, &cfg)?;
    if a.work.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    println!("near-duplicate benchmark: {} PH2 originals + {} copies (rescale 0.5-2x, JPEG 60-95, crop <=10%, brightness +-10%, flips), seed {}", q.originals, q.copies, a.seed);
    println!(
        "pairs: {} true, {} found, {} correct -> precision {:.4}, recall {:.4}",
        q.true_pairs, q.found_pairs, q.correct_pairs, q.precision, q.recall
    );
    println!("hashing: {:.1} images/s (decode included, {} threads); {} candidates searched in {:.3}s, confirmed in {:.1}s",
        q.images_per_second, rayon::current_num_threads(), q.candidates, q.search_seconds, q.confirm_seconds);
    if a.hashes > 0 {
        let mut setting = lesion_dedup::bench::SearchSetting::tool_default();
        setting.radius = lesion_dedup::search::SearchRadius {
            radius: a.search_radius,
            probe: a.search_probe_radius.min(a.search_radius),
        };
        let s = lesion_dedup::bench::search_speed(a.hashes, setting, a.seed);
        println!("pair search: {} synthetic items ({} hashes indexed, {} flipped lookups), radius {} probe {}: index {:.2}s + search {:.2}s; {} pairs, planted {}/{} found ({}/{} within the probe radius)",
            s.items, s.hashes, s.lookups, setting.radius.radius, setting.radius.probe, s.build_seconds, s.search_seconds, s.pairs, s.found_planted, s.planted_pairs, s.found_within_probe, s.planted_within_probe);
    }
    Ok(())
}
