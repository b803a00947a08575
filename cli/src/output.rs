//! How read commands print: a plain aligned table for people (no borders, like kubectl,
//! so `grep` and `awk` work on it too), or with `--json` the API's own JSON untouched,
//! so scripts see every field the backend documents and nothing the CLI invented.

use comfy_table::{Table, presets};
use serde_json::Value;

/// Prints `value` as pretty JSON.
pub fn json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Prints a table; `empty` instead when there are no rows.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>, empty: &str) {
    if rows.is_empty() {
        println!("{empty}");
        return;
    }
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(headers.iter().map(|h| h.to_uppercase()));
    for row in rows {
        table.add_row(row);
    }
    // The preset pads every cell with a space on each side; the first is noise.
    for line in table.to_string().lines() {
        println!("{}", line.strip_prefix(' ').unwrap_or(line).trim_end());
    }
}

/// Prints `key  value` lines, keys aligned.
pub fn fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:width$}  {value}");
    }
}

/// A JSON field as text: strings bare, null as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A permille value as a percentage (`973` → `97.3 %`), `-` when absent.
pub fn permille(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |p| format!("{:.1} %", p / 10.0))
}

/// Bytes in binary units.
pub fn bytes(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), |n| indicatif::HumanBytes(n).to_string())
}

/// Unix milliseconds as an age (`3m ago`), `-` when absent.
pub fn age(v: &Value) -> String {
    let Some(ms) = v.as_i64() else { return "-".to_owned() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let secs = (now - ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// Unix milliseconds as an RFC 3339 time, `-` when absent.
pub fn time(v: &Value) -> String {
    let Some(ms) = v.as_u64() else { return "-".to_owned() };
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Why an update attempt failed: the error's name (`not_confirmed` for a device that
/// reverted its commit), else what mota-proto calls its code (a backend older than the
/// `error` field), `-` when it has none.
pub fn error(attempt: &Value) -> String {
    let code = attempt["error_code"].as_u64().and_then(|c| u16::try_from(c).ok());
    match (attempt["error"].as_str(), code) {
        (Some(name), _) => name.to_owned(),
        (None, Some(code)) => mota_proto::message::ErrorCode(code).to_string(),
        (None, None) => text(&attempt["error_code"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_read_as_people_expect() {
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(text(&json!(["a", "b"])), "a,b");
        assert_eq!(text(&json!(7)), "7");
        assert_eq!(permille(&json!(973)), "97.3 %");
        assert_eq!(permille(&json!(null)), "-");
        assert_eq!(bytes(&json!(2048)), "2.00 KiB");
        assert_eq!(time(&json!(0)), "1970-01-01T00:00:00Z");
        assert_eq!(age(&json!(null)), "-");
        assert_eq!(error(&json!({"error_code": 305, "error": "not_confirmed"})), "not_confirmed");
        assert_eq!(error(&json!({"error_code": 305})), "not_confirmed", "named here when the backend does not");
        assert_eq!(error(&json!({"error_code": 9999, "error": null})), "code 9999");
        assert_eq!(error(&json!({"error_code": null, "error": null})), "-");
    }
}
