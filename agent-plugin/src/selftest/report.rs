//! The selftest's table of results: one row per check, printed, and the exit code.

use boundary::config::JailType;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Pass,
    Fail,
    Info,
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Info => "info",
            Outcome::Skipped => "skip",
        }
    }

    /// `Pass` if `holds`, else `Fail`.
    pub(super) fn of(holds: bool) -> Outcome {
        if holds {
            Outcome::Pass
        } else {
            Outcome::Fail
        }
    }
}

/// One printed row.
pub(super) struct Row {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// Prints the table and the notes; returns 0 if no check failed, else 1.
pub(super) fn print(jail_type: JailType, rows: &[Row], notes: &[String]) -> i32 {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(10);
    println!("boundary selftest ({jail_type})");
    for r in rows {
        let mut detail = r.detail.clone();
        if detail.len() > 100 {
            let mut cut = 100;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        println!("  {:<6} {:<width$}  {}", r.outcome.label(), r.name, detail);
    }
    for n in notes {
        println!("  note: {n}");
    }
    let failed = rows.iter().filter(|r| r.outcome == Outcome::Fail).count();
    if failed == 0 {
        println!("all enforcement checks hold");
        0
    } else {
        println!("{failed} check(s) FAILED: this jail does not hold on this host");
        1
    }
}

/// `s` on one line, runs of white space folded to one space.
pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
