//! Per-instance counters, rendered in the Prometheus text format by [`Counters::render`].

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::machine::State;
use crate::packet::DropReason;

/// Plain atomics so the driver, the agent's metrics endpoint and tests can share them.
#[derive(Debug, Default)]
pub struct Counters {
    pub adverts_received: AtomicU64,
    pub adverts_sent: AtomicU64,
    pub transitions_master: AtomicU64,
    pub transitions_backup: AtomicU64,
    pub transitions_initialize: AtomicU64,
    pub gratuitous_sent: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    pub fn dropped(&self, reason: DropReason) {
        if let Some(c) = self.dropped.get(reason.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped
            .get(reason.index())
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    pub fn transition(&self, to: State) {
        let c = match to {
            State::Master => &self.transitions_master,
            State::Backup => &self.transitions_backup,
            State::Initialize => &self.transitions_initialize,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends this instance's samples; `instance` becomes a label.
    pub fn render(&self, instance: &str, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "vrrp_adverts_received_total{{instance=\"{instance}\"}} {}",
            get(&self.adverts_received)
        );
        let _ = writeln!(
            out,
            "vrrp_adverts_sent_total{{instance=\"{instance}\"}} {}",
            get(&self.adverts_sent)
        );
        let _ = writeln!(
            out,
            "vrrp_gratuitous_announcements_sent_total{{instance=\"{instance}\"}} {}",
            get(&self.gratuitous_sent)
        );
        for (state, c) in [
            (State::Master, &self.transitions_master),
            (State::Backup, &self.transitions_backup),
            (State::Initialize, &self.transitions_initialize),
        ] {
            let _ = writeln!(
                out,
                "vrrp_state_transitions_total{{instance=\"{instance}\",to=\"{}\"}} {}",
                state.label(),
                get(c)
            );
        }
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "vrrp_packets_dropped_total{{instance=\"{instance}\",reason=\"{}\"}} {}",
                reason.label(),
                self.dropped_count(reason)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_labelled_samples() {
        let c = Counters::default();
        c.dropped(DropReason::Ttl);
        c.dropped(DropReason::Ttl);
        c.transition(State::Master);
        c.adverts_received.fetch_add(3, Ordering::Relaxed);
        let mut s = String::new();
        c.render("vi_1", &mut s);
        assert!(s.contains("vrrp_packets_dropped_total{instance=\"vi_1\",reason=\"ttl\"} 2\n"));
        assert!(s.contains("vrrp_packets_dropped_total{instance=\"vi_1\",reason=\"auth\"} 0\n"));
        assert!(s.contains("vrrp_state_transitions_total{instance=\"vi_1\",to=\"master\"} 1\n"));
        assert!(s.contains("vrrp_adverts_received_total{instance=\"vi_1\"} 3\n"));
    }
}
