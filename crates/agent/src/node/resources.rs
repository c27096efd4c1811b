//! Node resources: CPU (this process, against its cgroup CPU limit), memory
//! (cgroup-aware) and NVIDIA GPUs through NVML.

use std::path::Path;
use std::sync::Mutex;

use nvml_wrapper::Nvml;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::metrics::{GpuLabel, Metrics};

/// One GPU as NVML reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub memory_total: u64,
    pub memory_used: u64,
    pub utilization_percent: f64,
}

/// A snapshot of this machine's resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Logical CPUs this process can be scheduled on.
    pub cpu_cores: u32,
    /// CPUs this process may use: its cgroup CPU quota when there is one (fractional,
    /// e.g. 0.5 for `docker run --cpus 0.5`), else `cpu_cores`.
    pub cpu_limit: f64,
    /// This agent's own CPU use as a percentage of `cpu_limit`, 0-100 (not the host's).
    pub cpu_usage_percent: f64,
    pub memory_total: u64,
    pub memory_used: u64,
    pub memory_available: u64,
    pub process_rss: u64,
    pub gpus: Vec<GpuInfo>,
}

impl Resources {
    /// Sets the resource gauges of `m` from this sample.
    pub fn record(&self, m: &Metrics) {
        m.cpu_cores.set(i64::from(self.cpu_cores));
        m.cpu_usage_percent.set(self.cpu_usage_percent);
        m.cpu_limit.set(self.cpu_limit);
        m.memory_total.set(self.memory_total as i64);
        m.memory_used.set(self.memory_used as i64);
        m.memory_available.set(self.memory_available as i64);
        m.process_rss.set(self.process_rss as i64);
        m.gpu_count.set(self.gpus.len() as i64);
        for g in &self.gpus {
            let l = GpuLabel {
                gpu: g.index.to_string(),
            };
            m.gpu_memory_total
                .get_or_create(&l)
                .set(g.memory_total as i64);
            m.gpu_memory_used
                .get_or_create(&l)
                .set(g.memory_used as i64);
            m.gpu_utilization
                .get_or_create(&l)
                .set(g.utilization_percent);
        }
    }
}

/// Samples resources; keeps `sysinfo` state so CPU usage is a delta.
pub struct ResourceMonitor {
    sys: Option<Mutex<System>>,
    nvml: Option<Nvml>,
    pid: Pid,
    /// The cgroup CPU quota in CPUs (read once: it does not change under a process).
    cpu_quota: Option<f64>,
    /// The process's CPU time (ms) at the previous sample, and when it was taken: usage
    /// is the CPU time spent between two samples over the wall time between them.
    last_cpu: Mutex<Option<(std::time::Instant, u64)>>,
}

impl Default for ResourceMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceMonitor {
    /// A monitor; a missing NVML library or driver means zero GPUs, not an error.
    pub fn new() -> Self {
        let nvml = match Nvml::init() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!("NVML unavailable ({e}); reporting no GPUs");
                None
            }
        };
        let pid = Pid::from_u32(std::process::id());
        let sys = match System::new() {
            Ok(mut s) => {
                s.refresh_cpu_usage();
                s.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[pid]),
                    false,
                    ProcessRefreshKind::nothing().with_cpu(),
                );
                Some(Mutex::new(s))
            }
            Err(e) => {
                tracing::warn!("system information unavailable: {e}");
                None
            }
        };
        let cpu_quota = cgroup_cpu_quota(Path::new("/"));
        if let Some(q) = cpu_quota {
            tracing::info!("cgroup CPU limit: {q:.2} CPUs");
        }
        Self {
            sys,
            nvml,
            pid,
            cpu_quota,
            last_cpu: Mutex::new(None),
        }
    }

    /// Percent of one CPU this process used since the previous sample, from its
    /// accumulated CPU time (`cpu_ms`); 0 on the first sample.
    fn cpu_since_last(&self, cpu_ms: u64) -> f64 {
        let now = std::time::Instant::now();
        let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
        let pct = match *last {
            Some((t, ms)) => {
                let wall = now.duration_since(t).as_secs_f64() * 1000.0;
                if wall > 0.0 {
                    cpu_ms.saturating_sub(ms) as f64 / wall * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        *last = Some((now, cpu_ms));
        pct
    }

    /// Take a fresh sample.
    pub fn sample(&self) -> Resources {
        let Some(sys) = &self.sys else {
            let cpu_cores = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            return Resources {
                cpu_cores,
                cpu_limit: cpu_limit(cpu_cores, self.cpu_quota),
                gpus: self.gpus(),
                ..Resources::default()
            };
        };
        let mut sys = sys.lock().unwrap_or_else(|p| p.into_inner());
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            false,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        // Visible CPUs (std already caps this at the cgroup quota, rounded up).
        let cpu_cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(sys.cpus().len().max(1) as u32);
        let limit = cpu_limit(cpu_cores, self.cpu_quota);
        // Percent of one CPU (200 = two CPUs busy).
        let process_cpu = match sys.process(self.pid) {
            Some(p) => self.cpu_since_last(p.accumulated_cpu_time()),
            None => 0.0,
        };
        let (memory_total, memory_available) = match sys.cgroup_limits() {
            Some(cg) if cg.total_memory > 0 && cg.total_memory < sys.total_memory() => {
                (cg.total_memory, cg.free_memory.min(sys.available_memory()))
            }
            _ => (sys.total_memory(), sys.available_memory()),
        };
        Resources {
            cpu_cores,
            cpu_limit: limit,
            cpu_usage_percent: percent_of_limit(process_cpu, limit),
            memory_total,
            memory_used: memory_total.saturating_sub(memory_available),
            memory_available,
            process_rss: sys.process(self.pid).map(|p| p.memory()).unwrap_or(0),
            gpus: self.gpus(),
        }
    }

    fn gpus(&self) -> Vec<GpuInfo> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let d = nvml.device_by_index(i).ok()?;
                let mem = d.memory_info().ok();
                Some(GpuInfo {
                    index: i,
                    name: d.name().unwrap_or_default(),
                    memory_total: mem.as_ref().map(|m| m.total).unwrap_or(0),
                    memory_used: mem.as_ref().map(|m| m.used).unwrap_or(0),
                    utilization_percent: d
                        .utilization_rates()
                        .map(|u| f64::from(u.gpu))
                        .unwrap_or(0.0),
                })
            })
            .collect()
    }
}

/// CPUs this process may use: the cgroup quota capped by the visible CPUs.
pub fn cpu_limit(cpu_cores: u32, quota: Option<f64>) -> f64 {
    let cores = f64::from(cpu_cores.max(1));
    quota.filter(|q| *q > 0.0).map_or(cores, |q| q.min(cores))
}

/// A process's CPU use given in percent of one CPU, as a percentage of `limit` CPUs (0-100).
pub fn percent_of_limit(percent_of_one_cpu: f64, limit: f64) -> f64 {
    if !percent_of_one_cpu.is_finite() || limit <= 0.0 {
        return 0.0;
    }
    (percent_of_one_cpu / limit).clamp(0.0, 100.0)
}

/// The CPU quota (in CPUs, e.g. 1.5) of the cgroup this process runs in, or `None` when
/// it is unlimited or unknown. `root` is the file system root (`/`; tests pass a fixture).
///
/// cgroup v2: `cpu.max` ("$QUOTA $PERIOD" or "max $PERIOD") of the process's cgroup
/// (`0::/path` in `/proc/self/cgroup`) and of every ancestor up to `/sys/fs/cgroup`.
/// cgroup v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1 = unlimited) along the
/// path of the `cpu` controller, under `/sys/fs/cgroup/cpu,cpuacct` (or `cpu`). Inside a
/// container the process's path usually does not exist in the container's view: the
/// mount root itself is then the container's cgroup. The smallest limit found wins.
pub fn cgroup_cpu_quota(root: &Path) -> Option<f64> {
    let cgroups = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let fs = root.join("sys/fs/cgroup");
    let mut best: Option<f64> = None;
    let mut take = |q: Option<f64>| {
        if let Some(q) = q.filter(|q| *q > 0.0 && q.is_finite()) {
            best = Some(best.map_or(q, |b: f64| b.min(q)));
        }
    };
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hier), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hier == "0" && controllers.is_empty() {
            // cgroup v2 (unified): only when /sys/fs/cgroup is the unified mount.
            if fs.join("cgroup.controllers").exists() {
                for dir in ancestors(&fs, path) {
                    take(read_v2(&dir.join("cpu.max")));
                }
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            let mount = ["cpu,cpuacct", "cpuacct,cpu", "cpu"]
                .iter()
                .map(|m| fs.join(m))
                .find(|d| d.join("cpu.cfs_quota_us").exists());
            if let Some(mount) = mount {
                for dir in ancestors(&mount, path) {
                    take(read_v1(&dir));
                }
            }
        }
    }
    best
}

/// `mount/path` and its parents up to `mount`, or just `mount` when `mount/path` does
/// not exist (a container's own view of its cgroup).
fn ancestors(mount: &Path, path: &str) -> Vec<std::path::PathBuf> {
    let rel = path.trim_start_matches('/');
    let leaf = mount.join(rel);
    if rel.is_empty() || !leaf.is_dir() {
        return vec![mount.to_path_buf()];
    }
    leaf.ancestors()
        .take_while(|d| d.starts_with(mount))
        .map(Path::to_path_buf)
        .collect()
}

fn read_v2(cpu_max: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(cpu_max).ok()?;
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next()?.parse().ok()?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    Some(quota.parse::<f64>().ok()? / period)
}

fn read_v1(dir: &Path) -> Option<f64> {
    let num = |f: &str| -> Option<f64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let quota = num("cpu.cfs_quota_us")?;
    let period = num("cpu.cfs_period_us")?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake file system root with the given files.
    fn root(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = d.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    #[test]
    fn v2_container_quota() {
        // docker run --cpus 0.5 with a cgroup namespace: the container sees "0::/".
        let r = root(&[
            ("proc/self/cgroup", "0::/\n"),
            (
                "sys/fs/cgroup/cgroup.controllers",
                "cpuset cpu io memory pids\n",
            ),
            ("sys/fs/cgroup/cpu.max", "50000 100000\n"),
        ]);
        assert_eq!(cgroup_cpu_quota(r.path()), Some(0.5));
    }

    #[test]
    fn v2_unlimited_is_none() {
        let r = root(&[
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/cgroup.controllers", "cpu memory\n"),
            ("sys/fs/cgroup/cpu.max", "max 100000\n"),
        ]);
        assert_eq!(cgroup_cpu_quota(r.path()), None);
    }

    #[test]
    fn v2_nested_takes_the_tightest_ancestor() {
        // A systemd service under a slice limited to 2 CPUs; the service itself unlimited.
        let r = root(&[
            ("proc/self/cgroup", "0::/agents.slice/agent-1.service\n"),
            ("sys/fs/cgroup/cgroup.controllers", "cpu memory\n"),
            ("sys/fs/cgroup/agents.slice/cpu.max", "200000 100000\n"),
            (
                "sys/fs/cgroup/agents.slice/agent-1.service/cpu.max",
                "max 100000\n",
            ),
        ]);
        assert_eq!(cgroup_cpu_quota(r.path()), Some(2.0));
        // and a tighter leaf wins over its parent
        let r = root(&[
            ("proc/self/cgroup", "0::/agents.slice/agent-1.service\n"),
            ("sys/fs/cgroup/cgroup.controllers", "cpu memory\n"),
            ("sys/fs/cgroup/agents.slice/cpu.max", "200000 100000\n"),
            (
                "sys/fs/cgroup/agents.slice/agent-1.service/cpu.max",
                "25000 100000\n",
            ),
        ]);
        assert_eq!(cgroup_cpu_quota(r.path()), Some(0.25));
    }

    #[test]
    fn v1_container_quota() {
        // Docker on cgroup v1 without a cgroup namespace: the path names the host's
        // cgroup, the container sees its own at the mount root.
        let r = root(&[
            (
                "proc/self/cgroup",
                "12:memory:/docker/0123abcd\n4:cpu,cpuacct:/docker/0123abcd\n1:name=systemd:/docker/0123abcd\n0::/\n",
            ),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "150000\n"),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
        ]);
        assert_eq!(cgroup_cpu_quota(r.path()), Some(1.5));
    }

    #[test]
    fn v1_unlimited_and_separate_cpu_mount() {
        let r = root(&[
            ("proc/self/cgroup", "3:cpu:/\n2:cpuacct:/\n"),
            ("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n"),
            ("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
        ]);
        assert_eq!(cgroup_cpu_quota(r.path()), None);
        let r = root(&[
            ("proc/self/cgroup", "3:cpu:/user/job\n"),
            ("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n"),
            ("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
            ("sys/fs/cgroup/cpu/user/job/cpu.cfs_quota_us", "300000\n"),
            ("sys/fs/cgroup/cpu/user/job/cpu.cfs_period_us", "100000\n"),
        ]);
        assert_eq!(cgroup_cpu_quota(r.path()), Some(3.0));
    }

    #[test]
    fn no_cgroup_files_is_none() {
        let r = root(&[]);
        assert_eq!(cgroup_cpu_quota(r.path()), None);
        // a v2 line without the unified mount (hybrid hosts): ignored
        let r = root(&[
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/cpu.max", "1 2"),
        ]);
        assert_eq!(cgroup_cpu_quota(r.path()), None);
    }

    #[test]
    fn usage_is_a_share_of_the_limit() {
        // 0.5 CPU allowed, the agent uses half a CPU: 100 %, not the host's figure.
        assert_eq!(cpu_limit(8, Some(0.5)), 0.5);
        assert_eq!(percent_of_limit(50.0, cpu_limit(8, Some(0.5))), 100.0);
        // No quota: the visible CPUs; 2 CPUs busy of 8 = 25 %.
        assert_eq!(cpu_limit(8, None), 8.0);
        assert_eq!(percent_of_limit(200.0, 8.0), 25.0);
        // A quota larger than the machine is capped by the CPUs there are.
        assert_eq!(cpu_limit(2, Some(4.0)), 2.0);
        assert_eq!(percent_of_limit(f64::NAN, 2.0), 0.0);
        assert_eq!(percent_of_limit(900.0, 2.0), 100.0);
    }

    #[test]
    fn sample_is_plausible() {
        let r = ResourceMonitor::new().sample();
        assert!(r.cpu_cores >= 1);
        assert!(r.cpu_limit > 0.0 && r.cpu_limit <= f64::from(r.cpu_cores));
        assert!(r.memory_total > 0);
        assert!(r.memory_available <= r.memory_total);
        assert!(r.process_rss > 0);
        assert!((0.0..=100.0).contains(&r.cpu_usage_percent));
    }

    #[test]
    fn own_busy_cpu_shows_up() {
        // This process spins one thread for 0.5 s between two samples: its own usage is
        // clearly above zero whatever the rest of the machine does.
        let m = ResourceMonitor::new();
        let _ = m.sample();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < std::time::Duration::from_millis(500) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let r = m.sample();
        let one_cpu = 100.0 / r.cpu_limit;
        assert!(
            r.cpu_usage_percent > one_cpu * 0.2,
            "busy thread measured as {:.1}% of {:.2} CPUs",
            r.cpu_usage_percent,
            r.cpu_limit
        );
    }
}
