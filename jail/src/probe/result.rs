//! A probe's result as one type: the probe prints it, the selftest and the tests read it back,
//! and the line format lives only here (`Display` writes it, `FromStr` reads it).

use std::fmt;
use std::str::FromStr;

/// One probe's outcome: line `#<index> <kind> <word> <detail>` of a probe run's output.
/// `word` says what happened, not a verdict (`connected`, `reply`, `refused`, ...; see the
/// module docs of [`crate::probe`]); the caller decides what it means for its jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Position of the probe in the run (groups separated by `;`, from 0).
    pub index: usize,
    /// The probe kind (`tcp`, `udp`, `read`, ...).
    pub kind: String,
    /// What happened: `refused` when the kernel said no, `error` when the probe was malformed.
    pub word: String,
    /// The rest: addresses, errno text, escaped response bytes.
    pub detail: String,
}

impl ProbeResult {
    /// Builds the result of probe `index` from the probe's own text (`<word>[:] <detail>`).
    pub(crate) fn from_text(index: usize, kind: &str, text: &str) -> ProbeResult {
        let first = text.split_whitespace().next().unwrap_or("");
        let start = text.find(first).unwrap_or(0) + first.len();
        ProbeResult {
            index,
            kind: kind.to_string(),
            word: first.trim_end_matches(':').to_string(),
            detail: text[start..].trim().to_string(),
        }
    }

    /// The kernel (or the jail) said no.
    pub fn refused(&self) -> bool {
        self.word == "refused"
    }

    /// Every result line in a probe run's output; other lines (a shell's, a tool's) are skipped.
    pub fn all(output: &str) -> Vec<ProbeResult> {
        output.lines().filter_map(|l| l.parse().ok()).collect()
    }

    /// The result of probe `index` in a probe run's output, if it printed one.
    pub fn find(output: &str, index: usize) -> Option<ProbeResult> {
        Self::all(output).into_iter().find(|r| r.index == index)
    }
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {} {}",
            self.index, self.kind, self.word, self.detail
        )
    }
}

/// Why a line is not a probe result.
#[derive(Debug, thiserror::Error)]
#[error("not a probe result line (want `#<index> <kind> <word> <detail>`): {0}")]
pub struct NotAResult(String);

impl FromStr for ProbeResult {
    type Err = NotAResult;

    fn from_str(line: &str) -> Result<ProbeResult, NotAResult> {
        let bad = || NotAResult(line.to_string());
        let mut parts = line.strip_prefix('#').ok_or_else(bad)?.splitn(4, ' ');
        let index = parts.next().and_then(|i| i.parse().ok()).ok_or_else(bad)?;
        let kind = parts.next().filter(|k| !k.is_empty()).ok_or_else(bad)?;
        let word = parts.next().filter(|w| !w.is_empty()).ok_or_else(bad)?;
        Ok(ProbeResult {
            index,
            kind: kind.to_string(),
            word: word.to_string(),
            detail: parts.next().unwrap_or("").to_string(),
        })
    }
}

/// The argument list that runs `probes` in one go (each `[kind, args...]`, joined by `;`), to
/// follow [`crate::probe::PROBE_ARG`].
pub fn probe_args<S: AsRef<str>>(probes: &[Vec<S>]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        if i > 0 {
            out.push(";".to_string());
        }
        out.extend(p.iter().map(|a| a.as_ref().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_reads_back_what_it_wrote() {
        let r = ProbeResult::from_text(3, "tcp", "refused: connect 10.0.0.2:80: Permission denied");
        assert_eq!(r.word, "refused");
        assert!(r.refused());
        let line = r.to_string();
        assert_eq!(
            line,
            "#3 tcp refused connect 10.0.0.2:80: Permission denied"
        );
        assert_eq!(line.parse::<ProbeResult>().unwrap(), r);
        let out = format!("noise\n{line}\n#4 raw created raw IP socket\n");
        assert_eq!(ProbeResult::all(&out).len(), 2);
        assert_eq!(ProbeResult::find(&out, 4).unwrap().word, "created");
        assert!("#x tcp refused".parse::<ProbeResult>().is_err());
        assert!("tool-nft=1".parse::<ProbeResult>().is_err());
    }

    #[test]
    fn probes_are_joined_by_semicolons() {
        let args = probe_args(&[vec!["tcp", "h", "80"], vec!["raw"]]);
        assert_eq!(args, ["tcp", "h", "80", ";", "raw"]);
    }
}
