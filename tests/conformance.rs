//! Runs the conformance example's logic over every PyTorch fixture in `tests/fixtures/pytorch/`
//! (copied from the shared fixture set: f64 and f32 for the RNN, LSTM and GRU; f64 for the
//! reset-before GRU, whose reference is an independent f64 implementation; fixed-length cases,
//! and packed variable-length ones, which run as padded batches; single layers, and 2- and
//! 3-layer stacks, bidirectional ones among them, which run as a `Stack`) and on every
//! available instruction set; and checks that cases needing later features are reported as
//! such, never compared.

#[allow(dead_code)]
#[path = "../examples/conformance.rs"]
mod conformance;

use std::path::{Path, PathBuf};

use conformance::{CaseError, run_case, run_case_on};
use fused_rnn::Isa;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch")
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_fixture_matches_pytorch() {
    let cases = fixtures();
    // Single layers, fixed length: 3 cells x 2 sizes x (f64, f32) + the reset-before GRU in
    // f64. Packed: 3 cells x (f64, f32) with lengths 6, 3, 3, 1, the LSTM also with unsorted
    // lengths 3, 6, 2 (f64, f32), and the reset-before GRU in f64. Stacks (f64, f32): LSTM and
    // GRU with 2 bidirectional layers, fixed and packed (unsorted lengths), the tanh RNN with 2
    // bidirectional layers packed, and the LSTM and GRU with 3 layers. The test cannot pass by
    // finding nothing.
    assert_eq!(cases.len(), 36, "{cases:?}");
    let count = |needle: &str| {
        cases
            .iter()
            .filter(|p| p.to_string_lossy().contains(needle))
            .count()
    };
    assert_eq!(count("_packed_"), 15, "{cases:?}");
    assert_eq!(count("_L2_bi_"), 10, "{cases:?}");
    assert_eq!(count("_L3_"), 4, "{cases:?}");
    let mut failed = Vec::new();
    for p in &cases {
        let isas: Vec<Option<Isa>> = if p.to_string_lossy().ends_with("_f32.safetensors") {
            Isa::available().into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        for isa in isas {
            let r = run_case_on(p, isa).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            print!("{}", r.render());
            assert!(r.tensors.len() >= 8, "{}: too few tensors", r.case);
            if !r.passed() {
                failed.push(format!("{} on {}", r.case, r.isa.name()));
            }
        }
    }
    assert!(failed.is_empty(), "outside tolerance: {failed:?}");
}

#[test]
fn f32_tolerance_is_twice_the_shared_bound() {
    for d in [
        testkit::random::dims(5, 2, 3, 6),
        testkit::random::dims(20, 3, 10, 17),
        testkit::random::dims(1, 1, 1, 1),
    ] {
        assert_eq!(
            conformance::f32_tolerance(&d),
            2.0 * testkit::tolerance::f32_tolerance(&d)
        );
    }
}

/// Copies fixture `case` into a fresh temporary directory with its sidecar edited by `edit`.
fn edited_case(case: &str, tag: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("conformance_{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture_dir();
    std::fs::copy(
        src.join(format!("{case}.safetensors")),
        dir.join(format!("{case}.safetensors")),
    )
    .unwrap();
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join(format!("{case}.json"))).unwrap())
            .unwrap();
    edit(&mut j);
    std::fs::write(dir.join(format!("{case}.json")), j.to_string()).unwrap();
    dir.join(format!("{case}.safetensors"))
}

#[test]
fn cases_needing_later_features_are_not_compared() {
    let case = "lstm_L2_bi_T6_B3_I4_H5";
    let p = edited_case(case, "dropout", |j| j["dropout"] = serde_json::json!(0.25));
    match run_case(&p) {
        Err(e @ CaseError::NeedsFeature(_)) => {
            assert_eq!(e.exit_code(), 3);
            assert!(e.to_string().contains("dropout"), "{e}");
        }
        other => panic!("dropout: expected NeedsFeature, got {other:?}"),
    }
}

/// A sidecar whose layers or directions disagree with the file's parameters is a format
/// error, never a comparison of the wrong model.
#[test]
fn layers_or_directions_in_only_one_of_sidecar_and_file_are_a_format_error() {
    for (case, tag, key, value) in [
        (
            "lstm_T5_B2_I3_H6",
            "layers",
            "num_layers",
            serde_json::json!(2),
        ),
        (
            "lstm_T5_B2_I3_H6",
            "bidir",
            "bidirectional",
            serde_json::json!(true),
        ),
        (
            "lstm_L2_bi_T6_B3_I4_H5",
            "unidir",
            "bidirectional",
            serde_json::json!(false),
        ),
        (
            "lstm_L3_T12_B2_I7_H9",
            "twolayers",
            "num_layers",
            serde_json::json!(2),
        ),
    ] {
        let p = edited_case(case, tag, |j| j[key] = value.clone());
        match run_case(&p) {
            Err(e @ CaseError::Format(_)) => assert_eq!(e.exit_code(), 2, "{tag}: {e}"),
            other => panic!("{tag}: expected a format error, got {other:?}"),
        }
    }
}

/// A sidecar and a file that disagree on `lengths` are a format error, either way round.
#[test]
fn lengths_in_only_one_of_sidecar_and_file_are_a_format_error() {
    let p = edited_case("lstm_T5_B2_I3_H6", "lengths", |j| {
        j["lengths"] = serde_json::json!([5, 3])
    });
    let e = run_case(&p).unwrap_err();
    assert!(matches!(e, CaseError::Format(_)), "{e}");
    assert!(e.to_string().contains("lengths"), "{e}");
    let p = edited_case("lstm_packed_T6_B4_I3_H5_len6331", "nolengths", |j| {
        j["lengths"] = serde_json::Value::Null
    });
    let e = run_case(&p).unwrap_err();
    assert!(matches!(e, CaseError::Format(_)), "{e}");
    // Lengths that do not fit the dims.
    let p = edited_case("lstm_packed_T6_B4_I3_H5_len6331", "longlengths", |j| {
        j["lengths"] = serde_json::json!([7, 3, 3, 1])
    });
    let e = run_case(&p).unwrap_err();
    assert!(matches!(e, CaseError::Format(_)), "{e}");
}

/// Lengths in the sidecar other than the file's int64 `lengths` are a format error (they would
/// let the file's padding into the computation): never compared.
#[test]
fn a_packed_case_with_other_lengths_is_a_format_error() {
    let p = edited_case("gru_packed_T6_B4_I3_H5_len6331", "otherlengths", |j| {
        j["lengths"] = serde_json::json!([6, 3, 3, 2])
    });
    let e = run_case(&p).unwrap_err();
    assert!(matches!(e, CaseError::Format(_)), "{e}");
    assert!(e.to_string().contains("[6, 3, 3, 1]"), "{e}");
}

#[test]
fn bad_cases_are_format_errors_and_a_wrong_answer_fails() {
    // Unknown cell, missing sidecar, wrong cell for the tensors.
    let p = edited_case("gru_T5_B2_I3_H6", "cell", |j| j["cell"] = "mgu".into());
    let e = run_case(&p).unwrap_err();
    assert!(
        matches!(e, CaseError::Format(_)) && e.exit_code() == 2,
        "{e}"
    );
    let e = run_case(Path::new("/nonexistent/case.safetensors")).unwrap_err();
    assert!(matches!(e, CaseError::Io(_)) && e.exit_code() == 2, "{e}");
    let p = edited_case("gru_T5_B2_I3_H6", "wrongcell", |j| {
        j["cell"] = "lstm".into()
    });
    let e = run_case(&p).unwrap_err();
    assert!(matches!(e, CaseError::Format(_)), "{e}");
    // The reset-before GRU's file read as PyTorch's GRU computes a different function: the
    // comparison must fail, not pass.
    let p = edited_case("gru_reset_before_T5_B2_I3_H6", "variant", |j| {
        j["cell"] = "gru".into()
    });
    let r = run_case(&p).unwrap();
    assert!(!r.passed(), "{}", r.render());
}
