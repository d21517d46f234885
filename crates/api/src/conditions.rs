//! Helpers to read and write standard `metav1.Condition`s in a status.
//!
//! `lastTransitionTime` only moves when the status value changes, as Kubernetes API
//! conventions require, so a controller can re-apply the same condition on every reconcile.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Status value of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell (yet).
    Unknown,
}

impl ConditionStatus {
    /// The string Kubernetes stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// Builds a condition stamped with `now`; [`set_condition`] keeps the old timestamp when the
/// status did not change.
pub fn new_condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(now),
    }
}

/// Inserts or replaces the condition of the same type. Returns true when anything changed
/// (so callers can skip a no-op status write).
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            let changed = *existing != condition;
            *existing = condition;
            changed
        }
        None => {
            conditions.push(condition);
            true
        }
    }
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of the given type is present with status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// Removes the condition of the given type; returns true when one was removed.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn set_condition_appends_a_new_type() {
        let mut conditions = Vec::new();
        let changed = set_condition(
            &mut conditions,
            new_condition("Ready", true.into(), "Up", "", Some(1), at(10)),
        );
        assert!(changed);
        assert!(is_condition_true(&conditions, "Ready"));
    }

    #[test]
    fn same_status_keeps_transition_time_but_updates_message() {
        let mut conditions = vec![new_condition("Ready", true.into(), "Up", "a", Some(1), at(10))];
        let changed = set_condition(
            &mut conditions,
            new_condition("Ready", true.into(), "Up", "b", Some(2), at(20)),
        );
        assert!(changed);
        let c = find_condition(&conditions, "Ready").unwrap();
        assert_eq!(c.last_transition_time, Time(at(10)));
        assert_eq!(c.message, "b");
        assert_eq!(c.observed_generation, Some(2));
    }

    #[test]
    fn reapplying_an_identical_condition_is_not_a_change() {
        let mut conditions = vec![new_condition("Ready", true.into(), "Up", "a", Some(1), at(10))];
        let changed = set_condition(
            &mut conditions,
            new_condition("Ready", true.into(), "Up", "a", Some(1), at(99)),
        );
        assert!(!changed);
    }

    #[test]
    fn status_flip_moves_transition_time() {
        let mut conditions = vec![new_condition("Ready", true.into(), "Up", "", None, at(10))];
        set_condition(
            &mut conditions,
            new_condition("Ready", false.into(), "Down", "", None, at(20)),
        );
        let c = find_condition(&conditions, "Ready").unwrap();
        assert_eq!(c.last_transition_time, Time(at(20)));
        assert!(!is_condition_true(&conditions, "Ready"));
    }

    #[test]
    fn remove_condition_reports_whether_it_existed() {
        let mut conditions = vec![new_condition("Ready", true.into(), "Up", "", None, at(10))];
        assert!(remove_condition(&mut conditions, "Ready"));
        assert!(!remove_condition(&mut conditions, "Ready"));
    }
}
