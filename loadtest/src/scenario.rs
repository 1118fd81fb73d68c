//! `loadtest run --scenario FILE`: run parameters from a TOML file, overridden by command-line
//! flags.
//!
//! Keys (all optional; unknown keys are an error): `viewers`, `duration`, `ramp`, `churn`, `p2p`
//! (`"off"`, `"on"`, `"ab"`), `rendition` (`"auto"` or an index), `liars`, `slow_peers`,
//! `slow_rate` (bytes/s), `seed`, `restart_cmd`, `restart_at`. Durations are strings like `"2m"`,
//! `"20s"` or `"500ms"`.

use std::time::Duration;

use serde::Deserialize;

use crate::report::P2pMode;
use crate::run::{parse_duration, parse_rendition, RunConfig};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    viewers: Option<usize>,
    duration: Option<String>,
    ramp: Option<String>,
    churn: Option<f64>,
    p2p: Option<String>,
    rendition: Option<RenditionValue>,
    liars: Option<f64>,
    slow_peers: Option<f64>,
    slow_rate: Option<u64>,
    seed: Option<u64>,
    restart_cmd: Option<String>,
    restart_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RenditionValue {
    Index(usize),
    Name(String),
}

/// Scenario parameters, each possibly unset (from a file, or from command-line flags).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scenario {
    pub viewers: Option<usize>,
    pub duration: Option<Duration>,
    pub ramp: Option<Duration>,
    pub churn: Option<f64>,
    pub p2p: Option<P2pMode>,
    /// `Some(None)`: auto (ABR).
    pub rendition: Option<Option<usize>>,
    pub liars: Option<f64>,
    pub slow_peers: Option<f64>,
    pub slow_rate: Option<u64>,
    pub seed: Option<u64>,
    pub restart_cmd: Option<String>,
    pub restart_at: Option<Duration>,
}

impl Scenario {
    /// Parses a TOML scenario; errors name the offending key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: ScenarioFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let duration = |key: &str, v: Option<String>| {
            v.map(|s| parse_duration(&s).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        let rendition = match file.rendition {
            None => None,
            Some(RenditionValue::Index(i)) => Some(Some(i)),
            Some(RenditionValue::Name(s)) => {
                Some(parse_rendition(&s).map_err(|e| format!("rendition: {e}"))?)
            }
        };
        Ok(Self {
            viewers: file.viewers,
            duration: duration("duration", file.duration)?,
            ramp: duration("ramp", file.ramp)?,
            churn: file.churn,
            p2p: file
                .p2p
                .map(|s| P2pMode::parse(&s).map_err(|e| format!("p2p: {e}")))
                .transpose()?,
            rendition,
            liars: file.liars,
            slow_peers: file.slow_peers,
            slow_rate: file.slow_rate,
            seed: file.seed,
            restart_cmd: file.restart_cmd,
            restart_at: duration("restart_at", file.restart_at)?,
        })
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `flags` over `self`: every value set in `flags` wins.
    pub fn overridden_by(self, flags: Scenario) -> Scenario {
        Scenario {
            viewers: flags.viewers.or(self.viewers),
            duration: flags.duration.or(self.duration),
            ramp: flags.ramp.or(self.ramp),
            churn: flags.churn.or(self.churn),
            p2p: flags.p2p.or(self.p2p),
            rendition: flags.rendition.or(self.rendition),
            liars: flags.liars.or(self.liars),
            slow_peers: flags.slow_peers.or(self.slow_peers),
            slow_rate: flags.slow_rate.or(self.slow_rate),
            seed: flags.seed.or(self.seed),
            restart_cmd: flags.restart_cmd.or(self.restart_cmd),
            restart_at: flags.restart_at.or(self.restart_at),
        }
    }

    /// Applies the set values to `base`; `viewers` and `duration` must be set.
    pub fn apply(self, base: RunConfig) -> Result<RunConfig, String> {
        let viewers = self
            .viewers
            .ok_or("--viewers is required (or `viewers` in the scenario file)")?;
        let duration = self
            .duration
            .ok_or("--duration is required (or `duration` in the scenario file)")?;
        Ok(RunConfig {
            viewers,
            duration,
            ramp: self.ramp.unwrap_or(base.ramp),
            churn: self.churn.unwrap_or(base.churn),
            p2p: self.p2p.unwrap_or(base.p2p),
            rendition: self.rendition.unwrap_or(base.rendition),
            liars: self.liars.unwrap_or(base.liars),
            slow_peers: self.slow_peers.unwrap_or(base.slow_peers),
            slow_rate: self.slow_rate.unwrap_or(base.slow_rate),
            seed: self.seed.unwrap_or(base.seed),
            restart_cmd: self.restart_cmd.or(base.restart_cmd),
            restart_at: self.restart_at.or(base.restart_at),
            ..base
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
viewers = 200
duration = "2m"
ramp = "30s"
churn = 0.1
p2p = "ab"
rendition = 1
liars = 0.05
slow_peers = 0.2
slow_rate = 20000
seed = 42
restart_cmd = "systemctl restart gateway"
restart_at = "60s"
"#;

    #[test]
    fn parses_every_key() {
        let s = Scenario::from_toml(FILE).unwrap();
        assert_eq!(s.viewers, Some(200));
        assert_eq!(s.duration, Some(Duration::from_secs(120)));
        assert_eq!(s.ramp, Some(Duration::from_secs(30)));
        assert_eq!(s.churn, Some(0.1));
        assert_eq!(s.p2p, Some(P2pMode::Ab));
        assert_eq!(s.rendition, Some(Some(1)));
        assert_eq!(s.liars, Some(0.05));
        assert_eq!(s.slow_peers, Some(0.2));
        assert_eq!(s.slow_rate, Some(20_000));
        assert_eq!(s.seed, Some(42));
        assert_eq!(s.restart_cmd.as_deref(), Some("systemctl restart gateway"));
        assert_eq!(s.restart_at, Some(Duration::from_secs(60)));
        assert_eq!(
            Scenario::from_toml("rendition = \"auto\"")
                .unwrap()
                .rendition,
            Some(None)
        );
        assert_eq!(Scenario::from_toml("").unwrap(), Scenario::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = Scenario::from_toml("viewers = 3\nbogus_key = 1\n").unwrap_err();
        assert!(e.contains("bogus_key"), "{e}");
        let e = Scenario::from_toml("duration = \"10x\"").unwrap_err();
        assert!(e.contains("duration"), "{e}");
        let e = Scenario::from_toml("p2p = \"maybe\"").unwrap_err();
        assert!(e.contains("p2p"), "{e}");
        assert!(Scenario::from_toml("viewers = \"ten\"").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let file = Scenario::from_toml(FILE).unwrap();
        let flags = Scenario {
            viewers: Some(10),
            p2p: Some(P2pMode::Off),
            rendition: Some(None),
            ..Scenario::default()
        };
        let config = file
            .overridden_by(flags)
            .apply(RunConfig::default())
            .unwrap();
        assert_eq!(config.viewers, 10);
        assert_eq!(config.p2p, P2pMode::Off);
        assert_eq!(config.rendition, None);
        assert_eq!(config.duration, Duration::from_secs(120));
        assert_eq!(config.seed, 42);
        assert_eq!(config.slow_rate, 20_000);
        assert_eq!(config.restart_at, Some(Duration::from_secs(60)));
        // Without a file, flags alone; viewers and duration are required.
        assert!(Scenario::default().apply(RunConfig::default()).is_err());
        let only = Scenario {
            viewers: Some(1),
            duration: Some(Duration::from_secs(5)),
            ..Scenario::default()
        }
        .apply(RunConfig::default())
        .unwrap();
        assert_eq!(only.slow_rate, crate::run::DEFAULT_SLOW_RATE);
        assert_eq!(only.seed, 1);
    }
}
