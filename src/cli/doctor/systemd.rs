//! `systemctl show notebook.service`: whether the unit runs, how often it
//! restarted, and which drop-ins change it.

use super::{Check, Verdict, check};

/// The properties asked of `systemctl show -p`.
pub const PROPERTIES: &str = "ActiveState,SubState,DropInPaths,NRestarts";

/// What `systemctl show` said about the unit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UnitState {
    pub active: String,
    pub sub: String,
    pub drop_ins: Vec<String>,
    pub restarts: Option<u64>,
}

impl UnitState {
    /// Parses `KEY=VALUE` lines; unknown keys are ignored.
    pub fn parse(text: &str) -> UnitState {
        let mut state = UnitState::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "ActiveState" => state.active = value.to_string(),
                "SubState" => state.sub = value.to_string(),
                "DropInPaths" => {
                    state.drop_ins = value.split_whitespace().map(str::to_string).collect();
                }
                "NRestarts" => state.restarts = value.parse().ok(),
                _ => {}
            }
        }
        state
    }

    /// Active → ok (with its restarts and drop-ins); anything else → warn
    /// with the commands that start it and say why it stopped.
    pub fn check(&self) -> Check {
        let mut details = Vec::new();
        if let Some(n) = self.restarts.filter(|n| *n > 0) {
            details.push(format!(
                "restarted {n} time{}",
                if n == 1 { "" } else { "s" }
            ));
        }
        details.push(if self.drop_ins.is_empty() {
            "no drop-ins".to_string()
        } else {
            format!("drop-ins: {}", self.drop_ins.join(", "))
        });
        let details = details.join("; ");
        if self.active == "active" || self.active == "reloading" {
            check(
                "systemd service",
                Verdict::Ok,
                format!(
                    "notebook.service is {} ({}); {details}",
                    self.active, self.sub
                ),
                None,
            )
        } else {
            check(
                "systemd service",
                Verdict::Warn,
                format!(
                    "notebook.service is {} ({}); {details}",
                    if self.active.is_empty() { "unknown" } else { &self.active },
                    if self.sub.is_empty() { "?" } else { &self.sub }
                ),
                Some("`sudo systemctl start notebook`; if it stops again, `journalctl -u notebook -n 50` says why".into()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_unit_with_drop_ins() {
        let s = UnitState::parse(
            "ActiveState=active\nSubState=running\nDropInPaths=/etc/systemd/system/notebook.service.d/ports.conf /run/systemd/system/notebook.service.d/x.conf\nNRestarts=2\n",
        );
        assert_eq!(
            s,
            UnitState {
                active: "active".into(),
                sub: "running".into(),
                drop_ins: vec![
                    "/etc/systemd/system/notebook.service.d/ports.conf".into(),
                    "/run/systemd/system/notebook.service.d/x.conf".into()
                ],
                restarts: Some(2),
            }
        );
        let c = s.check();
        assert_eq!(c.verdict, Verdict::Ok);
        assert!(c.message.contains("restarted 2 times"), "{}", c.message);
        assert!(c.message.contains("ports.conf"), "{}", c.message);
        assert!(c.fix.is_none());
    }

    #[test]
    fn failed_unit_warns_with_the_fix() {
        let s =
            UnitState::parse("NRestarts=0\nDropInPaths=\nActiveState=failed\nSubState=failed\n");
        assert_eq!(s.active, "failed");
        assert!(s.drop_ins.is_empty());
        let c = s.check();
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.message.contains("is failed (failed); no drop-ins"),
            "{}",
            c.message
        );
        assert!(c.fix.unwrap().contains("systemctl start notebook"));
    }

    #[test]
    fn inactive_and_unknown_output() {
        let c = UnitState::parse("ActiveState=inactive\nSubState=dead\n").check();
        assert_eq!(c.verdict, Verdict::Warn);
        let c = UnitState::parse("garbage\n").check();
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.message.contains("unknown"), "{}", c.message);
    }
}
