//! A borrowed 2-D float64 matrix in C (row-major) or Fortran (column-major) order.

use crate::error::DriftError;

/// Memory order of a [`Matrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// C order: row `r` is `data[r * n_cols .. (r + 1) * n_cols]`.
    RowMajor,
    /// Fortran order: column `j` is `data[j * n_rows .. (j + 1) * n_rows]`.
    ColMajor,
}

/// A borrowed `n_rows x n_cols` float64 matrix; nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f64],
    n_rows: usize,
    n_cols: usize,
    order: Order,
}

impl<'a> Matrix<'a> {
    /// Wraps `data` (length `n_rows * n_cols`) in the given order.
    pub fn new(
        data: &'a [f64],
        n_rows: usize,
        n_cols: usize,
        order: Order,
    ) -> Result<Self, DriftError> {
        if n_rows.checked_mul(n_cols) != Some(data.len()) {
            return Err(DriftError::Shape(format!(
                "buffer of {} values cannot be a {n_rows} x {n_cols} matrix",
                data.len()
            )));
        }
        Ok(Matrix {
            data,
            n_rows,
            n_cols,
            order,
        })
    }

    /// A 1-D column of values as an `n x 1` matrix.
    pub fn column(values: &'a [f64]) -> Self {
        Matrix {
            data: values,
            n_rows: values.len(),
            n_cols: 1,
            order: Order::ColMajor,
        }
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    pub fn order(&self) -> Order {
        self.order
    }

    pub fn data(&self) -> &'a [f64] {
        self.data
    }

    /// Value at row `r`, column `j`.
    #[inline]
    pub fn get(&self, r: usize, j: usize) -> f64 {
        match self.order {
            Order::RowMajor => self.data[r * self.n_cols + j],
            Order::ColMajor => self.data[j * self.n_rows + r],
        }
    }

    /// Column `j` as a contiguous slice, when the matrix is column-major.
    pub fn col_slice(&self, j: usize) -> Option<&'a [f64]> {
        match self.order {
            Order::ColMajor => Some(&self.data[j * self.n_rows..(j + 1) * self.n_rows]),
            Order::RowMajor if self.n_cols == 1 => Some(self.data),
            Order::RowMajor => None,
        }
    }
}
