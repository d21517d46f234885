//! Judging what a rule observed against its condition: pure functions, no I/O.
//!
//! Whitespace (documented for authors in `docs/validation.md`):
//! - `equals`, `output_equals`: both sides are compared with surrounding whitespace (including
//!   trailing newlines) trimmed; numbers compare numerically (`1` equals `1.0`);
//! - `contains`, `output_contains`: the raw text, nothing trimmed;
//! - `matches_regex`: the text as it is or with trailing line breaks removed (either matching
//!   passes), so `$` matches at the end of the last line and `\n` after it still matches;
//! - `greater_than`, `less_than`: the trimmed text parsed as a number;
//! - `exists` / `not_exists` on output: the trimmed output is non-empty / empty.

use std::fmt::Write as _;

use cks_scenarios::Condition;
use serde_json::Value;

use crate::error::Error;
use crate::output::Captured;

/// What a check found, before judging.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Observed {
    /// Whether an object or file exists; `what` names it for messages.
    Presence { found: bool, what: String },
    /// The values a JSONPath selected. `missing` is set when the object itself was not found.
    Values {
        values: Vec<Value>,
        missing: Option<String>,
    },
    /// Command or script output, or file content.
    Text(Captured),
    /// A file whose content was asked for does not exist.
    MissingFile(String),
}

/// The judgement of one condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub passed: bool,
    /// The expectation, as shown to the student (`baseline`, `> 3`, `contains "x"`).
    pub expected: String,
    /// What was found, as shown to the student.
    pub actual: String,
    /// Why a failure happened when the message alone would not say (not a number, ...).
    pub reason: Option<String>,
}

/// How the expected side of a condition is shown.
pub(crate) fn describe(condition: &Condition) -> String {
    match condition {
        Condition::Equals(v) => text_of(v),
        Condition::OutputEquals(s) => s.clone(),
        Condition::Contains(s) | Condition::OutputContains(s) => format!("contains {s:?}"),
        Condition::Exists => "exists".to_owned(),
        Condition::NotExists => "does not exist".to_owned(),
        Condition::GreaterThan(n) => format!("> {}", number(*n)),
        Condition::LessThan(n) => format!("< {}", number(*n)),
        Condition::MatchesRegex(p) => format!("matches /{}/", p.as_str()),
    }
}

/// Judges `observed` against `condition`.
///
/// A multi-value selection (`[*]`, filters) passes `contains` when any value contains the
/// operand, and every other comparing condition when all values satisfy it (and at least one
/// was selected).
pub(crate) fn judge(condition: &Condition, observed: &Observed) -> Result<Verdict, Error> {
    let expected = describe(condition);
    let verdict = |passed: bool, actual: String, reason: Option<String>| Verdict {
        passed,
        expected: expected.clone(),
        actual,
        reason,
    };

    // Existence is about the thing itself, not about comparing a value.
    match (condition, observed) {
        (Condition::Exists | Condition::NotExists, _) => {
            let (found, actual) = presence(observed);
            let want = matches!(condition, Condition::Exists);
            return Ok(verdict(found == want, actual, None));
        }
        (_, Observed::Presence { found, what }) => {
            // The rule loader never pairs these; judge the only meaningful way.
            return Ok(verdict(false, presence_text(*found, what), None));
        }
        (_, Observed::MissingFile(path)) => {
            return Ok(verdict(false, format!("{path} does not exist"), None));
        }
        (
            _,
            Observed::Values {
                missing: Some(what), ..
            },
        ) => return Ok(verdict(false, format!("{what} not found"), None)),
        (_, Observed::Values { values, .. }) if values.is_empty() => {
            return Ok(verdict(false, "nothing at that path".to_owned(), None));
        }
        _ => {}
    }

    let subjects: Vec<Value> = match observed {
        Observed::Values { values, .. } => values.clone(),
        Observed::Text(c) => vec![Value::String(c.text.clone())],
        Observed::Presence { .. } | Observed::MissingFile(_) => unreachable!("handled above"),
    };
    let actual = match observed {
        Observed::Text(c) => c.display(),
        _ => show_values(&subjects),
    };

    let mut reason = None;
    let passed = match condition {
        Condition::Equals(want) => subjects.iter().all(|v| equals(v, want)),
        Condition::OutputEquals(want) => {
            let want = Value::String(want.clone());
            subjects.iter().all(|v| equals(v, &want))
        }
        Condition::Contains(needle) | Condition::OutputContains(needle) => {
            subjects.iter().any(|v| contains(v, needle))
        }
        Condition::GreaterThan(n) | Condition::LessThan(n) => {
            let greater = matches!(condition, Condition::GreaterThan(_));
            let mut all = true;
            for v in &subjects {
                match as_number(v) {
                    Some(x) if greater => all &= x > *n,
                    Some(x) => all &= x < *n,
                    None => {
                        reason = Some(format!("{} is not a number", quote_short(&text_of(v))));
                        all = false;
                    }
                }
            }
            all
        }
        Condition::MatchesRegex(pattern) => {
            let re = pattern.regex().map_err(|e| Error::Regex {
                pattern: pattern.as_str().to_owned(),
                cause: e.to_string(),
            })?;
            // Either reading of the text counts: `^v1\.33$` needs the trailing newline gone,
            // `ca\.crt\s*\n` (written against files) needs it kept.
            subjects.iter().all(|v| {
                let text = text_of(v);
                re.is_match(&text) || re.is_match(text.trim_end_matches(['\n', '\r']))
            })
        }
        Condition::Exists | Condition::NotExists => unreachable!("handled above"),
    };
    if !passed
        && reason.is_none()
        && let Observed::Text(c) = observed
        && c.truncated
    {
        reason = Some("only the first part of the output was compared".to_owned());
    }
    Ok(verdict(passed, actual, reason))
}

fn presence(observed: &Observed) -> (bool, String) {
    match observed {
        Observed::Presence { found, what } => (*found, presence_text(*found, what)),
        Observed::Values { values, missing } => match missing {
            Some(what) => (false, format!("{what} not found")),
            None => {
                let found: Vec<Value> = values.iter().filter(|v| !v.is_null()).cloned().collect();
                if found.is_empty() {
                    (false, "nothing at that path".to_owned())
                } else {
                    (true, show_values(&found))
                }
            }
        },
        Observed::Text(c) => {
            let found = !c.text.trim().is_empty();
            (
                found,
                if found {
                    c.display()
                } else {
                    "no output".to_owned()
                },
            )
        }
        Observed::MissingFile(path) => (false, format!("{path} does not exist")),
    }
}

fn presence_text(found: bool, what: &str) -> String {
    if found {
        format!("{what} exists")
    } else {
        format!("{what} does not exist")
    }
}

/// The text form of a value: strings as they are, everything else as JSON.
pub(crate) fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn show_values(values: &[Value]) -> String {
    match values {
        [one] => text_of(one),
        many => Value::Array(many.to_vec()).to_string(),
    }
}

fn equals(actual: &Value, want: &Value) -> bool {
    if matches!(want, Value::Array(_) | Value::Object(_)) {
        return actual == want;
    }
    let a = text_of(actual);
    let b = text_of(want);
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return true;
    }
    matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

fn contains(actual: &Value, needle: &str) -> bool {
    match actual {
        Value::Array(items) => items.iter().any(|i| contains(i, needle)),
        other => text_of(other).contains(needle),
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// A number as authors write it: `3`, not `3.0`.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        n.to_string()
    }
}

fn quote_short(s: &str) -> String {
    let trimmed = s.trim();
    let mut out = String::new();
    let mut chars = trimmed.chars();
    for c in chars.by_ref().take(60) {
        out.push(c);
    }
    if chars.next().is_some() {
        out.push('…');
    }
    let mut q = String::new();
    let _ = write!(q, "{out:?}");
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use cks_scenarios::Pattern;
    use serde_json::json;

    fn text(s: &str) -> Observed {
        Observed::Text(Captured::new(s))
    }

    fn values(v: Vec<Value>) -> Observed {
        Observed::Values {
            values: v,
            missing: None,
        }
    }

    fn passes(c: &Condition, o: &Observed) -> bool {
        judge(c, o).unwrap().passed
    }

    fn regex(p: &str) -> Condition {
        Condition::MatchesRegex(Pattern::new(p).unwrap())
    }

    #[test]
    fn output_equals_trims_surrounding_whitespace_and_trailing_newlines() {
        let c = Condition::OutputEquals("ok".into());
        assert!(passes(&c, &text("ok\n")));
        assert!(passes(&c, &text("  ok \r\n\n")));
        assert!(!passes(&c, &text("o k\n")));
        let c = Condition::OutputEquals(" ok\n".into());
        assert!(passes(&c, &text("ok")));
    }

    #[test]
    fn equals_compares_trimmed_text_and_numbers_numerically() {
        assert!(passes(
            &Condition::Equals(json!("baseline")),
            &values(vec![json!("baseline")])
        ));
        assert!(passes(&Condition::Equals(json!(3)), &text("3.0\n")));
        assert!(passes(
            &Condition::Equals(json!(true)),
            &values(vec![json!(true)])
        ));
        assert!(passes(
            &Condition::Equals(json!("true")),
            &values(vec![json!(true)])
        ));
        assert!(!passes(
            &Condition::Equals(json!("Baseline")),
            &values(vec![json!("baseline")])
        ));
        assert!(passes(
            &Condition::Equals(json!(["a"])),
            &values(vec![json!(["a"])])
        ));
    }

    #[test]
    fn contains_looks_at_raw_output_without_trimming() {
        let c = Condition::OutputContains("ok\n".into());
        assert!(passes(&c, &text("all ok\n")));
        assert!(!passes(&c, &text("all ok")));
        assert!(passes(&Condition::Contains("b c".into()), &text("a b c d")));
    }

    #[test]
    fn contains_on_a_list_checks_each_element() {
        let args = values(vec![json!(["--anonymous-auth=false", "--v=2"])]);
        assert!(passes(&Condition::Contains("anonymous-auth=false".into()), &args));
        assert!(!passes(&Condition::Contains("profiling".into()), &args));
    }

    #[test]
    fn multi_value_selection_needs_all_for_equals_and_any_for_contains() {
        let two = values(vec![json!("nginx:1.27"), json!("redis:7")]);
        assert!(!passes(&Condition::Equals(json!("nginx:1.27")), &two));
        assert!(passes(&Condition::Contains("redis".into()), &two));
        assert!(passes(&regex("^[a-z]+:[0-9.]+$"), &two));
        assert_eq!(
            judge(&Condition::Exists, &two).unwrap().actual,
            r#"["nginx:1.27","redis:7"]"#
        );
    }

    #[test]
    fn greater_and_less_compare_numbers_and_non_numbers_fail_with_a_reason() {
        assert!(passes(&Condition::GreaterThan(2.0), &text(" 3\n")));
        assert!(!passes(&Condition::GreaterThan(3.0), &text("3")));
        assert!(passes(&Condition::LessThan(10.0), &values(vec![json!(9.5)])));
        assert!(passes(&Condition::LessThan(10.0), &values(vec![json!("4")])));
        let v = judge(&Condition::GreaterThan(1.0), &text("three\n")).unwrap();
        assert!(!v.passed);
        assert_eq!(v.reason.as_deref(), Some(r#""three" is not a number"#));
        assert_eq!(v.expected, "> 1");
        let v = judge(&Condition::LessThan(1.5), &text("NaN")).unwrap();
        assert!(!v.passed && v.reason.is_some());
    }

    #[test]
    fn regex_matches_with_or_without_trailing_newlines_but_not_leading_text() {
        assert!(passes(&regex("^v1\\.33\\.\\d+$"), &text("v1.33.0\n")));
        assert!(passes(
            &regex("ca\\.crt\\s*\\n"),
            &text("clientCAFile: /pki/ca.crt\n")
        ));
        assert!(!passes(
            &regex("ca\\.crt\\s*\\n"),
            &text("clientCAFile: /pki/ca.crt")
        ));
        assert!(!passes(&regex("^v1"), &text(" v1.33.0\n")));
        assert!(passes(
            &regex("(?m)^level: Metadata$"),
            &text("a: b\nlevel: Metadata\nc: d\n")
        ));
    }

    #[test]
    fn exists_on_output_means_non_blank_output() {
        assert!(passes(&Condition::Exists, &text("x\n")));
        assert!(!passes(&Condition::Exists, &text(" \n\n")));
        assert!(passes(&Condition::NotExists, &text("\n")));
        let v = judge(&Condition::NotExists, &text("")).unwrap();
        assert_eq!(v.actual, "no output");
    }

    #[test]
    fn property_existence_ignores_null_and_reports_a_missing_object() {
        assert!(!passes(&Condition::Exists, &values(vec![json!(null)])));
        assert!(passes(&Condition::NotExists, &values(vec![])));
        let missing = Observed::Values {
            values: vec![],
            missing: Some("Namespace team-a".into()),
        };
        assert!(passes(&Condition::NotExists, &missing));
        let v = judge(&Condition::Equals(json!("x")), &missing).unwrap();
        assert!(!v.passed);
        assert_eq!(v.actual, "Namespace team-a not found");
        let v = judge(&Condition::Equals(json!("x")), &values(vec![])).unwrap();
        assert_eq!(v.actual, "nothing at that path");
    }

    #[test]
    fn presence_and_missing_files() {
        let present = Observed::Presence {
            found: true,
            what: "/etc/x".into(),
        };
        assert!(passes(&Condition::Exists, &present));
        assert_eq!(
            judge(&Condition::NotExists, &present).unwrap().actual,
            "/etc/x exists"
        );
        let gone = Observed::MissingFile("/etc/y".into());
        assert!(passes(&Condition::NotExists, &gone));
        let v = judge(&Condition::Contains("a".into()), &gone).unwrap();
        assert_eq!((v.passed, v.actual.as_str()), (false, "/etc/y does not exist"));
    }

    #[test]
    fn a_failure_on_truncated_output_says_so() {
        let observed = Observed::Text(Captured {
            text: "aaaa".into(),
            total_bytes: 10,
            truncated: true,
        });
        let v = judge(&Condition::OutputContains("b".into()), &observed).unwrap();
        assert!(!v.passed);
        assert!(
            v.actual.ends_with("[output truncated: 4 of 10 bytes kept]"),
            "{}",
            v.actual
        );
        assert!(v.reason.unwrap().contains("first part"));
    }

    #[test]
    fn expectations_are_described_for_students() {
        assert_eq!(describe(&Condition::Equals(json!(3))), "3");
        assert_eq!(describe(&Condition::Contains("x".into())), "contains \"x\"");
        assert_eq!(describe(&Condition::LessThan(0.5)), "< 0.5");
        assert_eq!(describe(&regex("^a$")), "matches /^a$/");
    }
}
