//! Selftest rows for the host kernel's settings (issue 11 item 1): sysctls, sysfs, the cgroup
//! the selftest itself runs in, and (nsjail) host devices. The probe behind them
//! (`boundary_jail::probe`, file `kernel.rs`) only opens files for writing and never writes;
//! the metadata row asks to replace an extended attribute the files do not have.

use super::table::{row, Arg::*, Expect::*, ProbeSpec, When::*};

/// Kernel settings whose change acts on the whole host.
const SETTINGS: &[&str] = &[
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/hostname",
    "/proc/sys/vm/drop_caches",
    "/proc/sysrq-trigger",
    "/sys/kernel/mm/ksm/run",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/uevent_helper",
];

/// Host files whose change runs code as root outside the jail; started by root, the jail must
/// not open them for writing (the probe never writes).
const SYSTEM_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/crontab",
    "/etc/hostname",
    "/usr/bin/env",
    "/var/lib/dpkg/status",
];

/// Devices that give raw access to the host (nsjail's `/dev` has none of them; landjail
/// started by root opens only the standard nodes).
const DEVICES: &[&str] = &[
    "/dev/kmsg",
    "/dev/mem",
    "/dev/sda",
    "/dev/vda",
    "/dev/nvme0n1",
    "/dev/loop0",
    "/dev/tty1",
    "/dev/kvm",
];

/// The freeze control of the cgroup this process is in (v2, else the v1 freezer).
pub(super) fn own_cgroup_files() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            out.push(format!("/sys/fs/cgroup{path}/cgroup.freeze"));
            out.push(format!("/sys/fs/cgroup{path}/cgroup.procs"));
        } else if controllers.split(',').any(|c| c == "freezer") {
            out.push(format!("/sys/fs/cgroup/freezer{path}/freezer.state"));
            out.push(format!("/sys/fs/cgroup/freezer{path}/cgroup.procs"));
        }
    }
    out
}

/// The rows.
#[rustfmt::skip]
pub(super) const PROBES: &[ProbeSpec] = &[
    row("host kernel settings (sysctl, sysfs) cannot be opened for writing", Always, "kwrite", &[Paths(SETTINGS)], Refused),
    row("the host's cgroups cannot be opened for writing", Always, "kwrite", &[OwnCgroups], Refused),
    row("host system files cannot be opened for writing (started by root)", Root, "kwrite", &[Paths(SYSTEM_FILES)], Refused),
    row("host devices (kmsg, disks, consoles) are not reachable", NsjailOrRoot, "kwrite", &[Paths(DEVICES)], Refused),
    row("host system files' mode, owner and attributes cannot be changed (started by root)", Root, "kmeta", &[Paths(SYSTEM_FILES)], Refused),
];
