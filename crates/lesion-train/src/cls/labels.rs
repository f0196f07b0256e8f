//! The three classes and the mapping from manifest rows to them.
//!
//! There is ONE mapping, documented (per source, with the benign-keratosis rule) in
//! [`lesion_data::labels`]; this module re-exports it under the names the classification
//! code uses: [`LesionClass`] is [`lesion_data::labels::Isic2017Class`], whose `index()` is the
//! logit position (0 melanoma, 1 seborrheic keratosis, 2 nevus), and [`label_rows`] keeps the
//! rows that map to a class and counts the excluded ones in a [`MappingReport`].

pub use lesion_data::labels::{
    label_rows, map_diagnosis, map_row, Isic2017Class as LesionClass, LabelledRow, MappingReport,
    NO_DIAGNOSIS, NUM_CLASSES,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The re-exported names keep the behaviour the trainer relies on.
    #[test]
    fn reexported_mapping() {
        assert_eq!(map_diagnosis("melanoma"), Some(LesionClass::Melanoma));
        assert_eq!(map_diagnosis(" Seborrheic  Keratosis "), Some(LesionClass::SeborrheicKeratosis));
        for n in ["nevus", "common nevus", "Atypical nevus"] {
            assert_eq!(map_diagnosis(n), Some(LesionClass::Nevus), "{n}");
        }
        for n in ["basal cell carcinoma", "", "benign keratosis"] {
            assert_eq!(map_diagnosis(n), None, "{n}");
        }
        assert_eq!(LesionClass::ALL.len(), NUM_CLASSES);
        for (i, c) in LesionClass::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(LesionClass::from_index(i), Some(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!(LesionClass::SeborrheicKeratosis.name(), "seborrheic_keratosis");
    }
}
