//! `agent-firewall`: the same program as `boundary` under the name Coder's modules call
//! (see `boundary::alias`); it runs the `boundary` installed next to it.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let e = boundary::alias::exec_sibling();
    eprintln!("agent-firewall: {e}");
    // 125 like env(1): the command never ran.
    std::process::ExitCode::from(125)
}
