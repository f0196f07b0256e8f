//! A bundle with its nets loaded: the one place that turns an image into a mask and class
//! probabilities. `lesion predict --bundle` (files, through the preprocessing cache) and
//! `lesion serve` (uploads, decoded in memory) both call it, so for the same image they give
//! the same numbers, bit for bit (with the same [`AbsentClasses`]).
//!
//! Order of work for one image, as the bundle's card says: segmentation nets → mask (the
//! card's threshold and post-processing) → lesion-centred crop (when the classifiers were
//! trained on crops) and ABCD descriptors (when an SVM head was trained with them, on the
//! cleaned mask, as `lesion crop` computed them for training) → every classifier (its own TTA,
//! or its SVM head) → probabilities averaged over classifiers.
use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};
use tch::Device;

use lesion_cls::cv::{predict_pixels, PredictSettings};
use lesion_cls::model::{ClsModel, Pixels};
use lesion_cls::tta::{ImagePrediction, Pool, TtaMode};
use lesion_core::{Result, TrainError};
use lesion_data::labels::{LabelledRow, LesionClass, NUM_CLASSES};
use lesion_data::manifest::ManifestRow;
use lesion_seg::crop::{crop_mask, crop_to_lesion, foreground_box, PixelBox};
use lesion_seg::descriptors::describe;
use lesion_seg::predict::{predict_probability, to_mask_at, LoadedModel, PostProcess};
use lesion_stack::stacking::LoadedStack;
use lesion_stack::svm_head::{predict_with_head, DescriptorTable, SvmHead};

use crate::bundle::Bundle;

/// The source name of rows made for in-memory images.
pub const UPLOAD_SOURCE: &str = "upload";

/// What the segmentation nets say of one image.
#[derive(Debug, Clone)]
pub struct Segmented {
    /// 0/255 at the image's own size: the card's threshold and post-processing.
    pub mask: GrayImage,
    /// Bounding box of the mask's foreground; `None` for an empty mask.
    pub lesion_box: Option<PixelBox>,
    /// ABCD descriptors of the cleaned mask, when a classifier needs them and the lesion is
    /// large enough to describe (otherwise the head's training means are used).
    pub descriptors: Option<Vec<f64>>,
    /// The lesion-centred crop the classifiers see, when the bundle classifies crops (the
    /// whole image for an empty mask).
    pub crop: Option<RgbImage>,
    /// The cleaned mask of the pixels the classifiers see (the crop's part of it when the
    /// bundle classifies crops), when a classifier pools its features by the lesion; as
    /// `lesion crop` wrote it for training.
    pub classifier_mask: Option<GrayImage>,
}

/// What a segmentation is for: the mask alone, or also the classifiers' inputs (the crop and
/// descriptors, when the bundle's classifiers use them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegUse {
    MaskOnly,
    ForClassification,
}

/// A bundle whose nets are in memory.
pub struct Engine {
    pub bundle: Bundle,
    seg: Vec<LoadedModel>,
    cls: Vec<(ClsModel, Option<SvmHead>)>,
    /// A stacked classifier (instead of `cls`).
    stack: Option<LoadedStack>,
    device: Device,
    needs_descriptors: bool,
    /// A classifier pools by the lesion (`[model] pooling = "global-and-lesion"`).
    needs_masks: bool,
    /// Which absent classes the classifiers allow (checked once, at load).
    absent_rule: AbsentRule,
}

impl Engine {
    /// Loads every net of an opened (verified) bundle.
    pub fn load(bundle: Bundle, device: Device) -> Result<Engine> {
        let seg = bundle.load_seg(device)?;
        let cls = bundle.load_cls(device)?;
        let stack = bundle.load_stack(device)?;
        let needs_descriptors =
            cls.iter().any(|(_, h)| h.as_ref().is_some_and(|h| h.descriptors > 0));
        if needs_descriptors && seg.is_empty() {
            return Err(TrainError::file(
                &bundle.root,
                "a classifier needs lesion descriptors but the bundle has no segmentation nets",
            ));
        }
        let needs_masks = cls.iter().any(|(m, _)| m.cfg.model.pooling.needs_mask());
        if needs_masks && seg.is_empty() {
            return Err(TrainError::file(
                &bundle.root,
                "a classifier pools its features by the lesion (model.pooling = global-and-lesion) but the bundle has no segmentation nets",
            ));
        }
        let absent_rule = AbsentRule::new(
            &bundle.root,
            stack.is_some(),
            bundle.card.classification.pool,
            cls.iter().any(|(_, head)| head.is_none()),
        );
        Ok(Engine { bundle, seg, cls, stack, device, needs_descriptors, needs_masks, absent_rule })
    }

    /// What this bundle's classifiers allow of absent classes.
    pub fn absent_rule(&self) -> &AbsentRule {
        &self.absent_rule
    }

    pub fn has_segmentation(&self) -> bool {
        !self.seg.is_empty()
    }

    pub fn has_classification(&self) -> bool {
        !self.cls.is_empty() || self.stack.is_some()
    }

    /// Whether a classifier needs the lesion mask of its input (lesion pooling).
    pub fn needs_masks(&self) -> bool {
        self.needs_masks
    }

    /// Segments `img` (`source` names it in errors); `None` when the bundle has no
    /// segmentation nets. With [`SegUse::MaskOnly`] no crop or descriptors are made.
    pub fn segment(
        &self,
        img: &RgbImage,
        source: &Path,
        usage: SegUse,
    ) -> Result<Option<Segmented>> {
        if self.seg.is_empty() {
            return Ok(None);
        }
        let settings = self.bundle.card.segmentation;
        let prob = predict_probability(&self.seg, img, source, self.device)?;
        let mask = to_mask_at(&prob, settings.threshold, settings.post)?;
        let for_cls = usage == SegUse::ForClassification && self.has_classification();
        let cleaned = if for_cls && (self.needs_descriptors || self.needs_masks) {
            let clean = PostProcess { largest_component: true, fill_holes: true };
            Some(to_mask_at(&prob, settings.threshold, clean)?)
        } else {
            None
        };
        // Too small a lesion to describe: the head fills in its training means.
        let descriptors = match &cleaned {
            Some(c) if self.needs_descriptors => describe(img, c).ok().map(|d| d.to_vec()),
            _ => None,
        };
        let (crop, crop_box) = match self.bundle.card.classification.crop {
            Some(c) if for_cls => {
                let (pixels, b) = crop_to_lesion(img, &mask, c)?;
                (Some(pixels), b)
            }
            _ => (None, None),
        };
        let classifier_mask = match &cleaned {
            Some(c) if self.needs_masks => Some(crop_mask(c, crop_box)),
            _ => None,
        };
        let lesion_box = foreground_box(&mask);
        Ok(Some(Segmented { mask, lesion_box, descriptors, crop, classifier_mask }))
    }

    /// Class probabilities (melanoma, keratosis, nevus) of `rows`, averaged over the bundle's
    /// classifiers; pixels from `pixels` (the crops when the bundle classifies crops),
    /// descriptors from `descriptors` (by row id). `tta` replaces the card's (and each SVM
    /// head's) TTA when given; `absent` classes are taken out as [`AbsentClasses`] says. Empty
    /// when the bundle has no classifiers.
    pub fn classify(
        &self,
        rows: &[LabelledRow],
        pixels: Pixels<'_>,
        descriptors: &DescriptorTable,
        tta: Option<TtaMode>,
        absent: &AbsentClasses,
        progress: bool,
    ) -> Result<Vec<ImagePrediction>> {
        if let Some(stack) = &self.stack {
            if tta.is_some() {
                return Err(TrainError::Config(
                    "a stacked classifier predicts with its components' own TTA (they were stacked so); drop the tta parameter".into(),
                ));
            }
            return stack.predict(rows, pixels, self.device, progress);
        }
        if self.cls.is_empty() {
            return Ok(Vec::new());
        }
        let c = &self.bundle.card.classification;
        let ps = PredictSettings {
            mode: tta.unwrap_or(c.tta),
            pool: c.pool,
            seed: c.tta_seed,
            features: None,
        };
        let mut sum: Option<Vec<ImagePrediction>> = None;
        for (model, head) in &self.cls {
            let mut preds = match head {
                Some(h) => {
                    let lighter;
                    let h = match tta {
                        Some(t) => {
                            lighter = SvmHead { tta: t, ..h.clone() };
                            &lighter
                        }
                        None => h,
                    };
                    predict_with_head(
                        model,
                        h,
                        rows,
                        pixels,
                        Some(descriptors),
                        self.device,
                        progress,
                    )?
                }
                None => {
                    predict_pixels(
                        std::slice::from_ref(model),
                        rows,
                        pixels,
                        &ps,
                        self.device,
                        progress,
                    )?
                    .predictions
                }
            };
            if !absent.is_empty() {
                // The average below keeps no replicas: adapt only the pooled probabilities.
                for p in &mut preds {
                    p.replicas.clear();
                }
                preds = match head {
                    None => lesion_cls::tta::without_classes(&preds, absent.classes())?,
                    Some(_) => {
                        for p in &mut preds {
                            for c in absent.classes() {
                                p.probs[c.index()] = 0.0;
                            }
                        }
                        preds
                    }
                };
            }
            sum = Some(match sum.take() {
                None => preds,
                Some(mut acc) => {
                    for (a, p) in acc.iter_mut().zip(preds) {
                        for (x, y) in a.probs.iter_mut().zip(p.probs) {
                            *x += y;
                        }
                    }
                    acc
                }
            });
        }
        let mut preds = sum.unwrap_or_default();
        let n = self.cls.len() as f64;
        for p in &mut preds {
            for v in p.probs.iter_mut() {
                *v /= n;
            }
            p.replicas.clear();
        }
        Ok(preds)
    }

    /// Segments and classifies one decoded image (the service's path). `meta` carries the
    /// patient metadata a head may use (`age`, `sex`), as a manifest's columns would;
    /// `absent` as for [`Engine::classify`].
    pub fn analyze(
        &self,
        id: &str,
        img: &RgbImage,
        meta: &[(&str, &str)],
        tta: Option<TtaMode>,
        absent: &AbsentClasses,
    ) -> Result<Analysis> {
        let source = Path::new(id);
        let mut segmented = self.segment(img, source, SegUse::ForClassification)?;
        let probabilities = if !self.has_classification() {
            None
        } else {
            // The crop is the classifiers' input only: moved out, not copied.
            let pixels =
                segmented.as_mut().and_then(|s| s.crop.take()).unwrap_or_else(|| img.clone());
            let mut row = upload_row(id, &pixels);
            for (k, v) in meta {
                row.set_meta(k, *v);
            }
            let mut table = DescriptorTable::new();
            if let Some(d) = segmented.as_mut().and_then(|s| s.descriptors.take()) {
                table.insert(id.to_string(), d);
            }
            let rows = [LabelledRow { row, class: LesionClass::Nevus }];
            let images = [pixels];
            let masks: Option<[GrayImage; 1]> =
                segmented.as_mut().and_then(|s| s.classifier_mask.take()).map(|m| [m]);
            let preds = self.classify(
                &rows,
                Pixels::Decoded(&images, masks.as_ref().map(|m| m.as_slice())),
                &table,
                tta,
                absent,
                false,
            )?;
            let p = preds.first().ok_or_else(|| {
                TrainError::Config(format!("{id}: the classifiers gave no prediction"))
            })?;
            Some(p.probs)
        };
        Ok(Analysis { segmented, probabilities })
    }
}

/// Classes that cannot occur among the images being classified (PH2: no keratoses), sorted
/// and without repeats; empty = the three-class question the nets were trained on. Invariant:
/// a non-empty set comes only from [`AbsentRule::check`], so it was checked against the
/// classifiers it is used with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AbsentClasses(Vec<LesionClass>);

impl AbsentClasses {
    /// The three-class question.
    pub fn none() -> AbsentClasses {
        AbsentClasses(Vec::new())
    }

    pub fn classes(&self) -> &[LesionClass] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Which absent classes a bundle's classifiers allow. Each softmax classifier's probabilities
/// are renormalised over the present classes ([`lesion_cls::tta::without_classes`], the
/// prior-shift correction) before the average; an SVM head's are one-vs-rest, not one
/// distribution, so only its absent classes are zeroed and the rest kept. Refused: a stacked
/// classifier (its meta-learner's outputs are not a distribution either) and softmax
/// classifiers whose TTA replicas are pooled other than by their average.
#[derive(Debug, Clone)]
pub struct AbsentRule {
    root: PathBuf,
    stacked: bool,
    pool: Pool,
    /// Some classifier has no SVM head (its probabilities are a softmax).
    softmax_members: bool,
}

impl AbsentRule {
    fn new(root: &Path, stacked: bool, pool: Pool, softmax_members: bool) -> AbsentRule {
        AbsentRule { root: root.to_path_buf(), stacked, pool, softmax_members }
    }

    /// The rule of an opened bundle, without loading its nets (reads the SVM heads' files):
    /// what a service checks requests against before its workers have loaded.
    pub fn of(bundle: &Bundle) -> Result<AbsentRule> {
        let mut softmax_members = false;
        for dir in bundle.model_dirs(crate::bundle::Task::Classification) {
            softmax_members |= lesion_stack::svm_head::read_head(&dir)?.is_none();
        }
        Ok(AbsentRule::new(
            &bundle.root,
            bundle.card.stack.is_some(),
            bundle.card.classification.pool,
            softmax_members,
        ))
    }

    /// `absent` checked: refused for the classifiers above, and when fewer than two classes
    /// would be left.
    pub fn check(&self, absent: &[LesionClass]) -> Result<AbsentClasses> {
        if absent.is_empty() {
            return Ok(AbsentClasses::none());
        }
        if self.stacked {
            return Err(TrainError::file(
                &self.root,
                "absent classes: a stacked classifier's probabilities are not one distribution over the classes, so they cannot be renormalised",
            ));
        }
        if self.pool != Pool::Avg && self.softmax_members {
            return Err(TrainError::file(
                &self.root,
                format!("absent classes: the bundle pools TTA replicas by {:?}, whose result is not one distribution over the classes; only averaged replicas can be renormalised", self.pool),
            ));
        }
        let mut absent = absent.to_vec();
        absent.sort();
        absent.dedup();
        // Checked on a probe so that the rule (at least two classes left) lives in one place.
        let probe = ImagePrediction {
            id: "probe".into(),
            probs: [1.0 / NUM_CLASSES as f64; NUM_CLASSES],
            replicas: Vec::new(),
        };
        lesion_cls::tta::without_classes(&[probe], &absent)?;
        Ok(AbsentClasses(absent))
    }
}

/// One image's answer: `None` for the parts the bundle has no nets for.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub segmented: Option<Segmented>,
    pub probabilities: Option<[f64; NUM_CLASSES]>,
}

/// A manifest row for an image held in memory (no file; `id` names it in errors).
pub fn upload_row(id: &str, img: &RgbImage) -> ManifestRow {
    ManifestRow {
        id: id.to_string(),
        source: UPLOAD_SOURCE.to_string(),
        image_path: Path::new(id).to_path_buf(),
        mask_path: None,
        width: img.width(),
        height: img.height(),
        content_hash: String::new(),
        diagnosis: None,
        group: None,
        meta: Default::default(),
    }
}
