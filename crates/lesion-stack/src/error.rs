//! Errors of this crate.

use lesion_metrics::cls::CurveError;

/// Anything that stops fitting, scoring or feature building.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StackError {
    /// The splitter refused (its message).
    #[error("{0}")]
    Split(String),
    /// A matrix's buffer does not hold `rows * cols` values.
    #[error("matrix of {rows}x{cols} needs {expected} values, got {got}")]
    Shape { rows: usize, cols: usize, expected: usize, got: usize },
    /// Rows of unequal length were given.
    #[error("row {row} has {got} values; row 0 has {expected}")]
    Ragged { row: usize, expected: usize, got: usize },
    /// A feature value is NaN or infinite.
    #[error("value at row {row}, column {col} is not finite ({value})")]
    NonFinite { row: usize, col: usize, value: f64 },
    /// Two inputs that must be aligned have different lengths.
    #[error("{what}: expected {expected} entries, got {got}")]
    Length { what: &'static str, expected: usize, got: usize },
    /// A model was applied to data of another width.
    #[error("model expects {expected} features, got {got}")]
    Width { expected: usize, got: usize },
    /// Fitting needs both classes.
    #[error("training labels hold one class only (all {})", if *.positive { "positive" } else { "negative" })]
    SingleClass { positive: bool },
    /// No sample at all.
    #[error("no samples")]
    Empty,
    /// A hyper-parameter is outside its domain.
    #[error("invalid parameter {name} = {value}: {reason}")]
    Param { name: &'static str, value: f64, reason: &'static str },
    /// Fewer distinct groups than folds.
    #[error("{groups} distinct groups cannot fill {folds} folds")]
    TooFewGroups { groups: usize, folds: usize },
    /// A validation fold could not be scored.
    #[error("fold {fold}: {source}")]
    FoldMetric {
        fold: usize,
        #[source]
        source: CurveError,
    },
    /// Stacking components disagree on image ids.
    #[error("component '{component}' row {row}: image id '{got}' where '{expected}' was expected")]
    IdMismatch { component: String, row: usize, expected: String, got: String },
    /// A probability is outside `[0, 1]` or not a number.
    #[error("component '{component}' row {row}: probability {value} is outside [0, 1]")]
    Probability { component: String, row: usize, value: f64 },
}

impl From<lesion_data::DataError> for StackError {
    fn from(e: lesion_data::DataError) -> Self {
        StackError::Split(e.to_string())
    }
}
