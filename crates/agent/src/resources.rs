//! Node resources: CPU, memory (cgroup-aware) and NVIDIA GPUs through NVML.

use std::sync::Mutex;

use nvml_wrapper::Nvml;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

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
    pub cpu_cores: u32,
    pub cpu_usage_percent: f64,
    pub memory_total: u64,
    pub memory_used: u64,
    pub memory_available: u64,
    pub process_rss: u64,
    pub gpus: Vec<GpuInfo>,
}

/// Samples resources; keeps `sysinfo` state so CPU usage is a delta.
pub struct ResourceMonitor {
    sys: Option<Mutex<System>>,
    nvml: Option<Nvml>,
    pid: Pid,
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
        let sys = match System::new() {
            Ok(mut s) => {
                s.refresh_cpu_usage();
                Some(Mutex::new(s))
            }
            Err(e) => {
                tracing::warn!("system information unavailable: {e}");
                None
            }
        };
        Self {
            sys,
            nvml,
            pid: Pid::from_u32(std::process::id()),
        }
    }

    /// Take a fresh sample.
    pub fn sample(&self) -> Resources {
        let Some(sys) = &self.sys else {
            return Resources {
                cpu_cores: std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1),
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
            ProcessRefreshKind::nothing().with_memory(),
        );
        let cpu_cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(sys.cpus().len().max(1) as u32);
        let (memory_total, memory_available) = match sys.cgroup_limits() {
            Some(cg) if cg.total_memory > 0 && cg.total_memory < sys.total_memory() => {
                (cg.total_memory, cg.free_memory.min(sys.available_memory()))
            }
            _ => (sys.total_memory(), sys.available_memory()),
        };
        Resources {
            cpu_cores,
            cpu_usage_percent: f64::from(sys.global_cpu_usage()).clamp(0.0, 100.0),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_plausible() {
        let r = ResourceMonitor::new().sample();
        assert!(r.cpu_cores >= 1);
        assert!(r.memory_total > 0);
        assert!(r.memory_available <= r.memory_total);
        assert!(r.process_rss > 0);
        assert!((0.0..=100.0).contains(&r.cpu_usage_percent));
    }
}
