//! A safe, shape-checked wrapper over matrixmultiply's strided GEMM (the output layer's).
//! Callers describe matrices as slices with shapes and strides; the wrapper proves
//! every index the GEMM can touch is inside its slice before calling it.

/// A read-only strided matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a, F> {
    pub data: &'a [F],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A mutable strided matrix view; rows and columns must not alias (`rs`, `cs` as for a
/// row-major matrix with leading dimension `rs >= cols`).
#[derive(Debug)]
pub(crate) struct MatMut<'a, F> {
    pub data: &'a mut [F],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, F> MatRef<'a, F> {
    /// A row-major `rows x cols` matrix with row stride `ld`.
    pub fn rows(data: &'a [F], rows: usize, cols: usize, ld: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose (a view, no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

impl<'a, F> MatMut<'a, F> {
    /// A row-major `rows x cols` matrix with row stride `ld`.
    pub fn rows(data: &'a mut [F], rows: usize, cols: usize, ld: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            rs: ld,
            cs: 1,
        }
    }
}

/// One past the largest offset a `rows x cols` view with strides `rs`, `cs` touches.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// The element types matrixmultiply has a GEMM for.
pub trait GemmScalar: Copy {
    /// `C <- alpha * A * B + beta * C`, raw matrixmultiply call.
    ///
    /// # Safety
    /// The pointers and strides must describe in-bounds, non-aliasing (for C) matrices of
    /// the given sizes, as matrixmultiply's `sgemm`/`dgemm` require.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

macro_rules! impl_gemm_scalar {
    ($t:ty, $f:path) => {
        impl GemmScalar for $t {
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded contract of this function (see the trait's `# Safety`).
                unsafe { $f(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
        }
    };
}
impl_gemm_scalar!(f32, matrixmultiply::sgemm);
impl_gemm_scalar!(f64, matrixmultiply::dgemm);

/// `C <- alpha * A * B + beta * C`. With `beta == 0`, C is not read (it may hold NaN).
///
/// Panics if the shapes disagree or a view reaches outside its slice: both are bugs in this
/// crate (public entries validate user buffers first), and checking here is what makes the
/// raw call sound.
pub(crate) fn gemm<F: GemmScalar>(
    alpha: F,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
    beta: F,
    c: MatMut<'_, F>,
) {
    assert!(
        a.cols == b.rows && a.rows == c.rows && b.cols == c.cols,
        "gemm shape mismatch: A {}x{}, B {}x{}, C {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    assert!(
        extent(a.rows, a.cols, a.rs, a.cs) <= a.data.len(),
        "gemm: A out of bounds"
    );
    assert!(
        extent(b.rows, b.cols, b.rs, b.cs) <= b.data.len(),
        "gemm: B out of bounds"
    );
    assert!(
        extent(c.rows, c.cols, c.rs, c.cs) <= c.data.len(),
        "gemm: C out of bounds"
    );
    // C's rows and columns must not overlap: a row-major or column-major layout with the
    // leading dimension at least the other extent.
    assert!(
        (c.cs == 1 && (c.rows <= 1 || c.rs >= c.cols))
            || (c.rs == 1 && (c.cols <= 1 || c.cs >= c.rows)),
        "gemm: C layout aliases"
    );
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    // matrixmultiply handles k == 0 by scaling C by beta; nothing special is needed.
    let s = |v: usize| v as isize; // strides are bounded by slice lengths, so they fit in isize
    // SAFETY: every offset the GEMM touches, (rows-1)*rs + (cols-1)*cs, was checked above to
    // lie inside the corresponding slice; C is borrowed mutably and its layout does not alias,
    // and A and B are shared borrows that cannot overlap the exclusive borrow of C.
    unsafe {
        F::gemm_raw(
            a.rows,
            a.cols,
            b.cols,
            alpha,
            a.data.as_ptr(),
            s(a.rs),
            s(a.cs),
            b.data.as_ptr(),
            s(b.rs),
            s(b.cs),
            beta,
            c.data.as_mut_ptr(),
            s(c.rs),
            s(c.cs),
        )
    }
}
