//! CPU time of the servers and of the machine, from /proc.

/// utime + stime of a process in clock ticks, from /proc/PID/stat.
pub(super) fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name start at field 3; utime is 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub(super) fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Busy (non-idle, non-iowait) clock ticks of the whole machine, from the
/// first line of /proc/stat.
pub(super) fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user.
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// CPU ticks of the servers (None if any is gone), of this process and of the
/// whole machine.
#[derive(Clone, Copy)]
pub(super) struct CpuSample {
    pub(super) servers: Option<u64>,
    pub(super) own: Option<u64>,
    pub(super) machine: Option<u64>,
}

pub(super) fn cpu_sample(pids: &[u32]) -> CpuSample {
    let servers = if pids.is_empty() {
        None
    } else {
        pids.iter()
            .map(|p| cpu_ticks(&p.to_string()))
            .sum::<Option<u64>>()
    };
    CpuSample {
        servers,
        own: cpu_ticks("self"),
        machine: machine_busy_ticks(),
    }
}
