//! Field types shared by validation rules and setup steps: execution targets, durations, and
//! the "plain string or block" shape authors use for `command`, `script` and `file`.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The machine a command, script or file check runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Target {
    /// The control-plane VM.
    #[default]
    ControlPlane,
    /// The (first) worker VM.
    Worker,
    /// Worker number N (1-based), for clusters with several workers.
    WorkerN(u32),
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "control-plane" | "controlplane" | "control_plane" => Ok(Target::ControlPlane),
            // The reference system names the worker terminal `worker-node`.
            "worker" | "worker-node" => Ok(Target::Worker),
            other => match other.strip_prefix("worker-").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => Ok(Target::WorkerN(n)),
                _ => Err(s.to_owned()),
            },
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::ControlPlane => f.write_str("control-plane"),
            Target::Worker => f.write_str("worker"),
            Target::WorkerN(n) => write!(f, "worker-{n}"),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration as written: a number (of seconds for timeouts, minutes for time estimates)
/// or text such as `30s`, `2m`, `1h 30m`, `PT90S`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawDuration {
    Number(f64),
    Text(String),
}

impl RawDuration {
    /// `unit` is what a bare number means.
    pub(crate) fn resolve(&self, unit: Duration) -> Result<Duration, String> {
        let from_number = |n: f64| {
            if n.is_finite() && n >= 0.0 {
                Duration::try_from_secs_f64(n * unit.as_secs_f64()).map_err(|e| e.to_string())
            } else {
                Err(format!("`{n}` is not a valid duration"))
            }
        };
        match self {
            RawDuration::Number(n) => from_number(*n),
            RawDuration::Text(t) => {
                let t = t.trim();
                if let Ok(n) = t.parse::<f64>() {
                    return from_number(n);
                }
                let d: jiff::SignedDuration = t
                    .parse()
                    .map_err(|e| format!("`{t}` is not a duration such as 30s, 5m or 1h 30m: {e}"))?;
                Duration::try_from(d).map_err(|_| format!("`{t}` is negative"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a duration such as 30s")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A field that is either a plain string or a block with more settings, such as
/// `command: kubectl get pods` and `command: {command: kubectl get pods, target: worker}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Inline<B> {
    Text(String),
    Block(B),
}

impl<'de, B: Deserialize<'de>> Deserialize<'de> for Inline<B> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<B>(PhantomData<B>);
        impl<'de, B: Deserialize<'de>> Visitor<'de> for V<B> {
            type Value = Inline<B>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Inline<B>, E> {
                Ok(Inline::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Inline<B>, E> {
                Ok(Inline::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Inline<B>, E> {
                Ok(Inline::Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Inline<B>, E> {
                Ok(Inline::Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Inline<B>, E> {
                Ok(Inline::Text(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Inline<B>, A::Error> {
                B::deserialize(MapAccessDeserializer::new(m)).map(Inline::Block)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Serializes an optional duration as whole seconds (fractions rounded up).
pub(crate) fn ser_opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_all_spellings() {
        assert_eq!("control-plane".parse(), Ok(Target::ControlPlane));
        assert_eq!("worker".parse(), Ok(Target::Worker));
        assert_eq!("worker-node".parse(), Ok(Target::Worker));
        assert_eq!("worker-2".parse(), Ok(Target::WorkerN(2)));
        assert!("worker-0".parse::<Target>().is_err());
        assert!("bastion".parse::<Target>().is_err());
        assert_eq!(Target::WorkerN(3).to_string(), "worker-3");
    }

    #[test]
    fn durations_accept_numbers_and_text() {
        let secs = Duration::from_secs(1);
        assert_eq!(
            RawDuration::Number(30.0).resolve(secs),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            RawDuration::Text("30".into()).resolve(secs),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            RawDuration::Text("2m".into()).resolve(secs),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(
            RawDuration::Text("1h 30m".into()).resolve(secs),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            RawDuration::Number(25.0).resolve(Duration::from_secs(60)),
            Ok(Duration::from_secs(1500))
        );
        assert!(RawDuration::Text("soon".into()).resolve(secs).is_err());
        assert!(RawDuration::Number(-1.0).resolve(secs).is_err());
    }
}
