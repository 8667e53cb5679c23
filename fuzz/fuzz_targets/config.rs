//! Configuration loader on arbitrary input: the YAML file parser, and the merge of flags,
//! environment and defaults (`resolve`) with every value taken from the input. Both must
//! return a configuration or an error message, never panic. No file is read: HOME and
//! BOUNDARY_CONFIG are never set, so no default file is looked for.
#![no_main]

use boundary::config::{cli::Flags, file, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Whole input as a YAML file.
    let _ = file::parse(&text);
    // Lines as flag values and environment variables.
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let get = |i: usize| lines.get(i).cloned();
    let flags = Flags {
        allow: lines.iter().skip(20).take(4).cloned().collect(),
        log_level: get(0),
        proxy_port: get(1),
        pprof: get(2),
        pprof_port: get(3),
        jail_type: get(4),
        use_real_dns: get(5),
        no_user_namespace: get(6),
        disable_audit_logs: get(7),
        enable_session_correlation: get(8),
        session_id_inject_target: get(9).into_iter().collect(),
        upstream_proxy: get(10),
        resolve: get(11).into_iter().collect(),
        audit_protocol: get(12),
        audit_flush_interval: get(13),
        audit_queue_size: get(14),
        audit_shutdown_timeout: get(15),
        landjail_deny_bind: get(16),
        idle_timeout: get(17),
        workspace_id: get(18),
        ..Flags::default()
    };
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
