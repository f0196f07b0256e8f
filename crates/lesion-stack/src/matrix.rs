//! A dense row-major feature matrix.

use crate::StackError;

/// Dense row-major `rows x cols` matrix of finite `f64`.
///
/// Invariants (checked by every constructor): `data.len() == rows * cols`,
/// every value finite.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl FeatureMatrix {
    /// Wraps a row-major buffer.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<FeatureMatrix, StackError> {
        let expected = rows.checked_mul(cols).ok_or(StackError::Shape {
            rows,
            cols,
            expected: usize::MAX,
            got: data.len(),
        })?;
        if data.len() != expected {
            return Err(StackError::Shape { rows, cols, expected, got: data.len() });
        }
        if let Some(k) = data.iter().position(|v| !v.is_finite()) {
            return Err(StackError::NonFinite {
                row: k / cols.max(1),
                col: k % cols.max(1),
                value: data[k],
            });
        }
        Ok(FeatureMatrix { rows, cols, data })
    }

    /// Builds from rows of equal length.
    pub fn from_rows<R: AsRef<[f64]>>(rows: &[R]) -> Result<FeatureMatrix, StackError> {
        let cols = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(rows.len() * cols);
        for (i, r) in rows.iter().enumerate() {
            let r = r.as_ref();
            if r.len() != cols {
                return Err(StackError::Ragged { row: i, expected: cols, got: r.len() });
            }
            data.extend_from_slice(r);
        }
        FeatureMatrix::new(rows.len(), cols, data)
    }

    /// Number of samples.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`; panics-free: an out-of-range `i` gives an empty slice.
    pub fn row(&self, i: usize) -> &[f64] {
        self.data.get(i * self.cols..(i + 1) * self.cols).unwrap_or(&[])
    }

    /// Iterator over rows.
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f64]> {
        (0..self.rows).map(move |i| self.row(i))
    }

    /// Row-major values.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// The rows listed in `indices` (in that order). Indices past the end
    /// give an error.
    pub fn select_rows(&self, indices: &[usize]) -> Result<FeatureMatrix, StackError> {
        let mut data = Vec::with_capacity(indices.len() * self.cols);
        for &i in indices {
            if i >= self.rows {
                return Err(StackError::Length { what: "row index", expected: self.rows, got: i });
            }
            data.extend_from_slice(self.row(i));
        }
        Ok(FeatureMatrix { rows: indices.len(), cols: self.cols, data })
    }

    /// Maps every row through `f`, which must return `out_cols` finite values.
    pub(crate) fn map_rows(
        &self,
        out_cols: usize,
        mut f: impl FnMut(&[f64], &mut [f64]),
    ) -> FeatureMatrix {
        let mut data = vec![0.0; self.rows * out_cols];
        for (i, out) in data.chunks_mut(out_cols.max(1)).enumerate().take(self.rows) {
            f(self.row(i), out);
        }
        FeatureMatrix { rows: self.rows, cols: out_cols, data }
    }
}

/// Dot product of equal-length slices.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
