//! Process-wide health-check counters, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Plain atomics shared by all check tasks; cheap enough to bump on every probe.
#[derive(Debug, Default)]
pub struct Counters {
    pub probes: AtomicU64,
    pub probe_failures: AtomicU64,
    pub probe_micros: AtomicU64,
    pub became_healthy: AtomicU64,
    pub became_unhealthy: AtomicU64,
}

impl Counters {
    pub fn probe(&self, ok: bool, latency: Duration) {
        self.probes.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.probe_failures.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.probe_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn transition(&self, healthy: bool) {
        let c = if healthy {
            &self.became_healthy
        } else {
            &self.became_unhealthy
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the samples; `checks` is the number of running checks.
    pub fn render(&self, checks: usize, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(out, "# TYPE kube_lvs_health_checks gauge");
        let _ = writeln!(out, "kube_lvs_health_checks {checks}");
        let _ = writeln!(out, "# TYPE kube_lvs_health_probes_total counter");
        let _ = writeln!(out, "kube_lvs_health_probes_total {}", get(&self.probes));
        let _ = writeln!(out, "# TYPE kube_lvs_health_probe_failures_total counter");
        let _ = writeln!(
            out,
            "kube_lvs_health_probe_failures_total {}",
            get(&self.probe_failures)
        );
        let _ = writeln!(out, "# TYPE kube_lvs_health_probe_duration_seconds summary");
        let _ = writeln!(
            out,
            "kube_lvs_health_probe_duration_seconds_sum {}",
            get(&self.probe_micros) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "kube_lvs_health_probe_duration_seconds_count {}",
            get(&self.probes)
        );
        let _ = writeln!(out, "# TYPE kube_lvs_health_transitions_total counter");
        let _ = writeln!(
            out,
            "kube_lvs_health_transitions_total{{to=\"healthy\"}} {}",
            get(&self.became_healthy)
        );
        let _ = writeln!(
            out,
            "kube_lvs_health_transitions_total{{to=\"unhealthy\"}} {}",
            get(&self.became_unhealthy)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts() {
        let c = Counters::default();
        c.probe(true, Duration::from_millis(2));
        c.probe(false, Duration::from_millis(3));
        c.transition(false);
        let mut out = String::new();
        c.render(7, &mut out);
        assert!(out.contains("kube_lvs_health_checks 7\n"));
        assert!(out.contains("kube_lvs_health_probes_total 2\n"));
        assert!(out.contains("kube_lvs_health_probe_failures_total 1\n"));
        assert!(out.contains("kube_lvs_health_probe_duration_seconds_sum 0.005\n"));
        assert!(out.contains("kube_lvs_health_transitions_total{to=\"unhealthy\"} 1\n"));
        assert!(out.contains("kube_lvs_health_transitions_total{to=\"healthy\"} 0\n"));
    }
}
