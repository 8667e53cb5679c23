//! A 2 GiB download and a 512 MiB upload through the proxy (HTTPS, CONNECT, TLS intercepted on
//! both legs) with the process's peak memory measured: bodies stream, they are never buffered.
//!
//! One test in its own binary, so no other test's allocations blur the peak. The peak is
//! VmHWM from /proc/self/status, reset before each transfer through /proc/self/clear_refs;
//! it covers the proxy and the origin server (both in this process); curl runs outside.

mod common;

use common::*;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Generous bound: buffers are per connection (tens of KiB to a few MiB), not per body.
const MAX_GROWTH: u64 = 96 * MIB;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"))
        * 1024
}

/// Resets the peak-RSS counter to the current RSS and returns it.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("cannot reset VmHWM");
    status_kib("VmRSS:")
}

#[test]
fn two_gib_download_and_512_mib_upload_in_bounded_memory() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let origin = Origin::start(Some(h.origin_tls()), None).await;
        let ca = h.ca_cert.display().to_string();
        let proxy = h.proxy_url();

        // Warm up once so the leaf, pools and allocator arenas exist before measuring.
        let warm = curl(&[
            "--proxy",
            &proxy,
            "--cacert",
            &ca,
            "-o",
            "/dev/null",
            &format!("https://{ORIGIN}:{}/big?n={}", origin.port(), 8 * MIB),
        ])
        .await;
        assert_eq!(warm.status(), 200, "{warm:?}");

        let before = reset_peak();
        let started = std::time::Instant::now();
        let out = curl(&[
            "--proxy",
            &proxy,
            "--cacert",
            &ca,
            "-o",
            "/dev/null",
            "-w",
            "size=%{size_download}\n@@STATUS %{http_code}@@\n",
            &format!("https://{ORIGIN}:{}/big?n={}", origin.port(), 2 * GIB),
        ])
        .await;
        let secs = started.elapsed().as_secs_f64();
        let peak = status_kib("VmHWM:");
        assert_eq!(out.statuses, vec![200], "{out:?}");
        assert!(
            out.body.contains(&format!("size={}\n", 2 * GIB)),
            "short download: {out:?}"
        );
        let growth = peak.saturating_sub(before);
        eprintln!(
            "download 2 GiB: rss before {} MiB, peak {} MiB, growth {} MiB, {:.0} MB/s",
            before / MIB,
            peak / MIB,
            growth / MIB,
            (2 * GIB) as f64 / 1e6 / secs
        );
        assert!(
            growth < MAX_GROWTH,
            "memory grew by {} MiB during a 2 GiB download",
            growth / MIB
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("upload.bin");
        // Sparse: reads as zeros, takes no disk.
        std::fs::File::create(&file)
            .unwrap()
            .set_len(512 * MIB)
            .unwrap();
        let before = reset_peak();
        let started = std::time::Instant::now();
        let out = curl(&[
            "--proxy",
            &proxy,
            "--cacert",
            &ca,
            "-T",
            &file.display().to_string(),
            &format!("https://{ORIGIN}:{}/upload", origin.port()),
        ])
        .await;
        let secs = started.elapsed().as_secs_f64();
        let peak = status_kib("VmHWM:");
        assert_eq!(out.statuses, vec![200], "{out:?}");
        assert!(
            out.body.contains(&format!("received {} bytes", 512 * MIB)),
            "{}",
            out.body
        );
        let growth = peak.saturating_sub(before);
        eprintln!(
            "upload 512 MiB: rss before {} MiB, peak {} MiB, growth {} MiB, {:.0} MB/s",
            before / MIB,
            peak / MIB,
            growth / MIB,
            (512 * MIB) as f64 / 1e6 / secs
        );
        assert!(
            growth < MAX_GROWTH,
            "memory grew by {} MiB during a 512 MiB upload",
            growth / MIB
        );
        let seen = origin.seen();
        assert_eq!(seen.last().unwrap().method, "PUT");
    });
}
