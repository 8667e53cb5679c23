//! landjail on a kernel without Landlock network rules must refuse to start, saying which kernel
//! it needs and naming nsjail. The kernel here has ABI 7, so the check is forced to see an older
//! ABI through the `insecure-test-hooks` feature (never enabled in release builds).
//!
//! Run: `cargo test -p boundary-jail --features insecure-test-hooks --test landjail_abi`.

use boundary_jail::{landjail, JailError, JailSpec};

#[test]
fn old_kernels_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let spec = JailSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), format!("touch {}", marker.display()).into()],
        ..Default::default()
    };
    for (abi, says) in [("3", "ABI 3"), ("0", "no Landlock at all")] {
        // This binary has only this test, so no other thread reads the variable meanwhile.
        std::env::set_var(landjail::FORCE_ABI_ENV, abi);
        let err = landjail::start(&spec, &Default::default())
            .expect_err("an ABI below 4 must be refused");
        assert!(matches!(err, JailError::Unsupported(_)), "{err:?}");
        let msg = err.to_string();
        for part in ["Landlock ABI 4", "Linux 6.7", "nsjail", says] {
            assert!(msg.contains(part), "error lacks {part:?}: {msg}");
        }
        assert!(
            !marker.exists(),
            "the command ran although the kernel was refused"
        );
    }
    std::env::set_var(landjail::FORCE_ABI_ENV, "7");
    assert_eq!(landjail::check_abi().unwrap(), 7);
}
