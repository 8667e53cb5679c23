//! Runs every `sh` block of the operator docs (`docs/*.md`) as a user would type it: `boundary`
//! and the integration binaries on `PATH`, a fresh `HOME` per block, the repository as the
//! working directory. `# expect-exit: N`, `# expect-stdout: TEXT` and `# expect-stderr: TEXT`
//! comments are checked. Blocks tagged `sh coder` need a real Coder deployment and blocks
//! tagged `sh blocked` cannot run on this machine (the page says why); both are listed, not run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boundary_integration::farhost::boundary_binary;

#[derive(Debug)]
struct Block {
    place: String,
    tag: String,
    code: String,
    exit: i32,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

fn blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut current: Option<(usize, String, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        match current.take() {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    current = Some((i + 1, info.trim().to_string(), Vec::new()));
                }
            }
            Some((start, info, mut lines)) => {
                if line.trim_start().starts_with("```") {
                    if info == "sh" || info.starts_with("sh ") {
                        let mut b = Block {
                            place: format!(
                                "{}:{start}",
                                path.file_name().unwrap().to_string_lossy()
                            ),
                            tag: info.trim_start_matches("sh").trim().to_string(),
                            code: lines.join("\n"),
                            exit: 0,
                            stdout: Vec::new(),
                            stderr: Vec::new(),
                        };
                        for l in &lines {
                            let l = l.trim();
                            if let Some(v) = l.strip_prefix("# expect-exit:") {
                                b.exit = v.trim().parse().expect("expect-exit number");
                            } else if let Some(v) = l.strip_prefix("# expect-stdout:") {
                                b.stdout.push(v.trim().to_string());
                            } else if let Some(v) = l.strip_prefix("# expect-stderr:") {
                                b.stderr.push(v.trim().to_string());
                            }
                        }
                        out.push(b);
                    }
                } else {
                    lines.push(line.to_string());
                    current = Some((start, info, lines));
                }
            }
        }
    }
    assert!(current.is_none(), "{}: unclosed code fence", path.display());
    out
}

fn run(block: &Block, repo: &Path, bin_dir: &Path, target: &Path) -> Result<(), String> {
    let home = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let prelude = if block.exit == 0 {
        "set -euo pipefail\n"
    } else {
        "set -uo pipefail\n"
    };
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("{prelude}{}", block.code))
        .current_dir(repo)
        .env("HOME", home.path())
        .env("PATH", path)
        .env("CARGO_INSTALL_ROOT", home.path().join("cargo-root"))
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("BOUNDARY_") || k.starts_with("CODER_") || k == "XDG_CONFIG_HOME" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    // A bound, not a speed assertion: a block that hangs must not hang the suite.
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("did not finish within 900 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (t1.join().unwrap(), t2.join().unwrap());
    let mut problems = Vec::new();
    if status.code() != Some(block.exit) {
        problems.push(format!("exit {:?}, expected {}", status.code(), block.exit));
    }
    for want in &block.stdout {
        if !stdout.contains(want.as_str()) {
            problems.push(format!("stdout lacks {want:?}"));
        }
    }
    for want in &block.stderr {
        if !stderr.contains(want.as_str()) {
            problems.push(format!("stderr lacks {want:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            problems.join("; ")
        ))
    }
}

#[test]
fn every_docs_command_runs_as_documented() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let bin = boundary_binary().expect("boundary binary");
    let bin_dir = bin.parent().unwrap().to_path_buf();
    for tool in ["boundary-coderd-sink", "boundary-agent-log-proxy"] {
        assert!(
            bin_dir.join(tool).is_file(),
            "{tool} is not built next to boundary in {}",
            bin_dir.display()
        );
    }
    let target: PathBuf = bin_dir.parent().unwrap().to_path_buf();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 6, "docs pages: {pages:?}");
    let (mut ran, mut coder, mut blocked, mut failures) = (0, Vec::new(), Vec::new(), Vec::new());
    for page in &pages {
        for b in blocks(page) {
            match b.tag.as_str() {
                "" => {
                    ran += 1;
                    eprintln!("docs: running {}", b.place);
                    if let Err(e) = run(&b, &repo, &bin_dir, &target) {
                        failures.push(format!("{}: {e}\n{}", b.place, b.code));
                    }
                }
                "coder" => coder.push(b.place),
                "blocked" => blocked.push(b.place),
                other => panic!(
                    "{}: unknown block tag {other:?} (use sh, sh coder or sh blocked)",
                    b.place
                ),
            }
        }
    }
    eprintln!("docs: {ran} blocks run; need a real Coder deployment: {coder:?}; cannot run here: {blocked:?}");
    assert!(ran >= 20, "only {ran} runnable blocks found");
    assert!(
        failures.is_empty(),
        "{} docs block(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
