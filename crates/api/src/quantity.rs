//! Kubernetes resource quantities (`4Gi`, `500m`, `1e3`): the schema pattern and CEL rule the
//! CRDs check them with at admission, and a parser of the same grammar for the arithmetic the
//! operator does on them (does a pool's ResourceQuota hold what its clusters need?).

use schemars::{Schema, SchemaGenerator};
use serde_json::json;

/// The pattern Kubernetes itself (controller-gen for `resource.Quantity`) gives quantities,
/// without the leading sign: no quantity in a template or a quota makes sense below zero.
pub const QUANTITY_PATTERN: &str = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// CEL rule on an int-or-string quantity: a quantity (Kubernetes' own parser, which is
/// stricter than the pattern about exponents) and above zero.
pub const POSITIVE_QUANTITY_RULE: &str =
    "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))";

fn quantity_schema(nullable: bool) -> Schema {
    let mut schema = json!({
        "x-kubernetes-int-or-string": true,
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-validations": [{
            "rule": POSITIVE_QUANTITY_RULE,
            "message": "must be a Kubernetes quantity greater than zero, for example 4Gi or 500m",
        }],
    });
    if nullable {
        schema["nullable"] = json!(true);
    }
    Schema::try_from(schema).expect("a JSON object is a schema")
}

/// Schema of a required quantity field that must be above zero (`schema_with`).
pub fn positive_quantity(_: &mut SchemaGenerator) -> Schema {
    quantity_schema(false)
}

/// Schema of an optional quantity field that must be above zero when set (`schema_with`).
pub fn optional_positive_quantity(_: &mut SchemaGenerator) -> Schema {
    quantity_schema(true)
}

/// The value of a quantity in thousandths of its unit (bytes for memory and storage, cores
/// for CPU), rounded up, as Kubernetes rounds when it needs a whole number. `None` when the
/// text is not a quantity in Kubernetes' grammar or too large to hold.
///
/// Grammar (`k8s.io/apimachinery/pkg/api/resource`): an optional sign, digits with an
/// optional fraction, and one suffix: a binary SI suffix (`Ki` to `Ei`), a decimal SI suffix
/// (`n`, `u`, `m`, none, `k`, `M` to `E`) or a decimal exponent (`e3`, `E-2`).
pub fn millis(text: &str) -> Option<i128> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'+' => (false, &text[1..]),
        b'-' => (true, &text[1..]),
        _ => (false, text),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    // 30 significant digits fit i128 with room for the multipliers below.
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let (binary_power, decimal_exponent): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (0, exponent.parse().ok()?)
        }
    };
    // value * 1000 = mantissa * 2^binary * 10^(decimal - fraction digits + 3)
    let scaled = mantissa.checked_mul(1i128.checked_shl(binary_power)?)?;
    let power = decimal_exponent
        .checked_sub(i32::try_from(fraction.len()).ok()?)?
        .checked_add(3)?;
    let value = if power >= 0 {
        scaled.checked_mul(10i128.checked_pow(power.unsigned_abs())?)?
    } else {
        match 10i128.checked_pow(power.unsigned_abs()) {
            Some(divisor) => (scaled + divisor - 1) / divisor,
            // Smaller than a thousandth: rounds up to one, or is zero.
            None => i128::from(scaled > 0),
        }
    };
    Some(if negative { -value } else { value })
}

/// A whole amount in thousandths, shown in the largest binary unit that divides it (`120Gi`)
/// or as a plain number, for messages about memory and storage.
pub fn format_bytes(millis: i128) -> String {
    let bytes = millis / 1000;
    for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes != 0 && bytes % (1i128 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_follows_kubernetes_quantity_grammar() {
        let cases: &[(&str, i128)] = &[
            ("4Gi", (4i128 << 30) * 1000),
            ("1", 1000),
            ("500m", 500),
            ("1.5", 1500),
            (".5", 500),
            ("5.", 5000),
            ("1k", 1_000_000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("1n", 1),
            ("0", 0),
            ("+2", 2000),
            ("-5Gi", -(5i128 << 30) * 1000),
            ("1.5Gi", 1_610_612_736_000),
        ];
        for (text, want) in cases {
            assert_eq!(millis(text), Some(*want), "{text}");
        }
        for bad in [
            "", "lots", "1.2.3", "Gi", "1gi", "1 Gi", "1e", "1e2.5", "1Kb", "--1", ".", "1e+",
        ] {
            assert_eq!(millis(bad), None, "{bad:?} is not a quantity");
        }
        assert_eq!(millis(&"9".repeat(40)), None, "too large");
    }

    #[test]
    fn the_parser_accepts_nothing_the_unsigned_pattern_refuses() {
        let schema = json!({"type": "string", "pattern": QUANTITY_PATTERN});
        for text in ["4Gi", "500m", "1.5", ".5", "5.", "1e3", "1E-3", "0", "100Mi", "2"] {
            assert!(millis(text).is_some(), "{text}");
            assert!(jsonschema::is_valid(&schema, &json!(text)), "{text}");
        }
        for text in ["lots", "-5Gi", "+1", "1gi", "Gi", ""] {
            assert!(
                !jsonschema::is_valid(&schema, &json!(text)),
                "{text} passes the pattern"
            );
        }
    }

    #[test]
    fn bytes_are_shown_in_the_largest_exact_binary_unit() {
        assert_eq!(format_bytes((120i128 << 30) * 1000), "120Gi");
        assert_eq!(format_bytes((1536i128 << 20) * 1000), "1536Mi");
        assert_eq!(format_bytes(1_000_000), "1000");
    }
}
