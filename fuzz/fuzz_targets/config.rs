//! Configuration loader on arbitrary input: the YAML file parser, and the merge of flags,
//! environment and defaults (`resolve`) with every value taken from the input. Both must
//! return a configuration or an error message, never panic. No file is read: HOME and
//! BOUNDARY_CONFIG are never set, so no default file is looked for.
#![no_main]

use boundary::config::{cli::Flags, file, resolve, settings::SETTINGS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Whole input as a YAML file.
    let _ = file::parse(&text);
    // Lines as flag values and environment variables.
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Each line feeds one setting's flag, in table order; lines from 20 on are --allow rules.
    let mut flags = Flags::default();
    for (row, line) in SETTINGS.iter().filter(|s| s.key != "config").zip(&lines) {
        flags.set(row.key, vec![line.clone()]);
    }
    flags.set("allow", lines.iter().skip(20).take(4).cloned().collect());
    let env_lines = lines.clone();
    let env = move |name: &str| -> Option<String> {
        if name == "HOME" || name == "BOUNDARY_CONFIG" || name == "XDG_CONFIG_HOME" {
            return None;
        }
        env_lines.iter().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        })
    };
    let _ = resolve(&flags, &env);
});
