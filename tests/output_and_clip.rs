//! The output layer `y = W_hy h + b_y` (values against a direct loop, gradients against
//! central finite differences in f64) and gradient clipping by global norm.

use fused_rnn::{Error, GradMode, OutputLayer, clip_grad_norm};
use testkit::random::{rng, uniform};

#[test]
fn output_layer_forward_matches_direct_sum() {
    let (n, h, o) = (5, 7, 3);
    let mut r = rng(11);
    let w: Vec<f64> = uniform(&mut r, o * h, -1.0, 1.0);
    let b: Vec<f64> = uniform(&mut r, o, -1.0, 1.0);
    let x: Vec<f64> = uniform(&mut r, n * h, -1.0, 1.0);
    let layer = OutputLayer::new(o, h, &w, &b).unwrap();
    let mut y = vec![f64::NAN; n * o];
    layer.forward(&x, &mut y).unwrap();
    for row in 0..n {
        for k in 0..o {
            let want: f64 = b[k] + (0..h).map(|j| w[k * h + j] * x[row * h + j]).sum::<f64>();
            assert!((y[row * o + k] - want).abs() <= 1e-14 * want.abs().max(1.0));
        }
    }
}

#[test]
fn output_layer_gradients_match_finite_differences() {
    let (n, h, o) = (4, 6, 3);
    let mut r = rng(12);
    let w: Vec<f64> = uniform(&mut r, o * h, -1.0, 1.0);
    let b: Vec<f64> = uniform(&mut r, o, -1.0, 1.0);
    let x: Vec<f64> = uniform(&mut r, n * h, -1.0, 1.0);
    let dy: Vec<f64> = uniform(&mut r, n * o, -1.0, 1.0);
    let loss = |w: &[f64], b: &[f64], x: &[f64]| {
        let l = OutputLayer::new(o, h, w, b).unwrap();
        let mut y = vec![0.0; n * o];
        l.forward(x, &mut y).unwrap();
        y.iter().zip(&dy).map(|(a, c)| a * c).sum::<f64>()
    };
    let layer = OutputLayer::new(o, h, &w, &b).unwrap();
    let mut g = layer.zero_grads().unwrap();
    let mut dh = vec![f64::NAN; n * h];
    layer
        .backward(&x, &dy, &mut g, Some(&mut dh), GradMode::Overwrite)
        .unwrap();
    // L is linear in every parameter, so central differences are exact up to rounding
    // (~eps·|terms|/step ≈ 1e-10 with step 1e-4): 1e-8 relative to max(|g|, 1) is ample.
    let step = 1e-4;
    let fd = |f: &dyn Fn(f64) -> f64| (f(step) - f(-step)) / (2.0 * step);
    for j in 0..w.len() {
        let want = fd(&|d| {
            let mut w2 = w.clone();
            w2[j] += d;
            loss(&w2, &b, &x)
        });
        assert!(
            (g.weight[j] - want).abs() <= 1e-8 * want.abs().max(1.0),
            "dW[{j}]"
        );
    }
    for j in 0..b.len() {
        let want = fd(&|d| {
            let mut b2 = b.clone();
            b2[j] += d;
            loss(&w, &b2, &x)
        });
        assert!(
            (g.bias[j] - want).abs() <= 1e-8 * want.abs().max(1.0),
            "db[{j}]"
        );
    }
    for j in 0..x.len() {
        let want = fd(&|d| {
            let mut x2 = x.clone();
            x2[j] += d;
            loss(&w, &b, &x2)
        });
        assert!(
            (dh[j] - want).abs() <= 1e-8 * want.abs().max(1.0),
            "dh[{j}]"
        );
    }
    // Accumulate adds the same gradients again.
    let before = g.clone();
    layer
        .backward(&x, &dy, &mut g, None, GradMode::Accumulate)
        .unwrap();
    for (a, b) in g.weight.iter().zip(&before.weight) {
        assert_eq!(*a, 2.0 * b);
    }
}

#[test]
fn output_layer_rejects_bad_shapes() {
    let l = OutputLayer::<f32>::with_seeded_init(2, 3, 1).unwrap();
    let mut y = vec![0.0f32; 4];
    assert!(matches!(
        l.forward(&[0.0; 5], &mut y),
        Err(Error::BufferLength { .. })
    ));
    assert!(matches!(
        l.forward(&[], &mut y),
        Err(Error::BufferLength { .. })
    ));
    assert!(matches!(
        l.forward(&[0.0; 6], &mut y[..3]),
        Err(Error::BufferLength { .. })
    ));
    assert!(matches!(
        OutputLayer::<f32>::new(0, 3, &[], &[]),
        Err(Error::ZeroDim { .. })
    ));
    assert!(matches!(
        OutputLayer::<f32>::new(2, 3, &[0.0; 5], &[0.0; 2]),
        Err(Error::BufferLength { .. })
    ));
}

/// Sizes whose bytes overflow are [`Error::SizeOverflow`], not a "capacity overflow" panic.
#[test]
fn output_layer_sizes_whose_bytes_overflow_are_errors() {
    for (o, h) in [(1 << 62, 1), (1, 1 << 62), (1 << 31, 1 << 31)] {
        let r = OutputLayer::<f32>::with_seeded_init(o, h, 0);
        assert!(
            matches!(r, Err(Error::SizeOverflow { .. })),
            "O = {o}, H = {h}: {:?}",
            r.err()
        );
    }
}

/// Sizes the allocator refuses are [`Error::AllocationFailed`], not an abort. 2^60 f32 are
/// 2^62 bytes, past every 64-bit address space (x86-64: 2^47 bytes for a process, 2^56 with
/// 5-level paging), so the request fails whatever the overcommit policy. The reviewer's
/// 2^40 f32 (4 TiB) fits the address space: it is asked for only where the kernel refuses
/// it (with `vm.overcommit_memory = 1` it would be granted, and then written).
#[test]
fn output_layer_sizes_past_memory_are_errors() {
    for (o, h) in [(1 << 60, 1), (1, 1 << 60)] {
        let r = OutputLayer::<f32>::with_seeded_init(o, h, 0);
        assert!(
            matches!(r, Err(Error::AllocationFailed { .. })),
            "O = {o}, H = {h}: {:?}",
            r.err()
        );
    }
    if testkit::memory::kernel_refuses_allocation(4 << 40) {
        let r = OutputLayer::<f32>::with_seeded_init(1 << 40, 1, 0);
        assert!(
            matches!(r, Err(Error::AllocationFailed { .. })),
            "{:?}",
            r.err()
        );
    } else {
        eprintln!("skipped O = 2^40: this kernel might grant 4 TiB");
    }
}

#[test]
fn clipping_scales_to_the_max_norm_and_only_above_it() {
    let mut a = [3.0f32, 0.0];
    let mut b = [4.0f32];
    let norm = clip_grad_norm(&mut [&mut a[..], &mut b[..]], 1.0).unwrap();
    assert_eq!(norm, 5.0);
    assert!((a[0] - 0.6).abs() < 1e-7 && (b[0] - 0.8).abs() < 1e-7);
    let norm = clip_grad_norm(&mut [&mut a[..], &mut b[..]], 2.0).unwrap();
    assert!((norm - 1.0).abs() < 1e-6);
    assert!(
        (a[0] - 0.6).abs() < 1e-7,
        "below the max norm nothing changes"
    );
    assert!(matches!(
        clip_grad_norm(&mut [&mut a[..]], 0.0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        clip_grad_norm(&mut [&mut a[..]], f32::NAN),
        Err(Error::InvalidArgument { .. })
    ));
    let mut c = [f32::NAN, 1.0];
    assert!(matches!(
        clip_grad_norm(&mut [&mut c[..]], 1.0),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(c[1], 1.0, "non-finite norm leaves gradients untouched");
}
