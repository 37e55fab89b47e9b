//! How the CLI prints an API answer: `--json` prints the body as the server sent it
//! (pretty); otherwise a readable form — an object's scalar fields as `field: value`
//! lines, and each list of objects in it as a table whose columns are the scalar
//! fields of its rows (nested values shown as compact JSON). Pure: text in, text
//! out; depends on nothing but `serde_json`.

use serde_json::Value;

/// The widest a table cell is printed (longer values end with `…`).
const MAX_CELL: usize = 48;

/// `value` as the CLI prints it.
pub fn render(value: &Value, json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(value).unwrap_or_default();
    }
    match value {
        Value::Object(fields) => {
            let mut lines = Vec::new();
            let mut tables = Vec::new();
            for (name, field) in fields {
                match field {
                    Value::Array(rows) if rows.iter().all(Value::is_object) && !rows.is_empty() => {
                        tables.push(format!("{name}:\n{}", table(rows)));
                    }
                    _ => lines.push(format!("{name}: {}", scalar(field))),
                }
            }
            lines.extend(tables);
            lines.join("\n")
        }
        Value::Array(rows) if rows.iter().all(Value::is_object) => table(rows),
        other => scalar(other),
    }
}

/// A value on one line: strings bare, everything else as compact JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn cell(value: Option<&Value>) -> String {
    let text = value.map_or(String::new(), scalar);
    if text.chars().count() > MAX_CELL {
        let cut: String = text.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Rows of objects as an aligned table; columns in first-seen order.
pub fn table(rows: &[Value]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        for name in row.as_object().into_iter().flat_map(|o| o.keys()) {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(row.get(*c))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([name.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(columns.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_prints_fields_then_its_lists_as_tables() {
        let value = json!({"count": 2, "items": [
            {"key": "a", "version": 3},
            {"key": "bb", "version": 12, "session_id": 7}
        ], "next": null});
        let text = render(&value, false);
        assert_eq!(
            text,
            "count: 2\nnext: null\nitems:\nKEY  VERSION  SESSION_ID\na    3\nbb   12       7"
        );
    }

    #[test]
    fn json_is_the_body_itself_and_long_cells_are_cut() {
        let value = json!({"value": {"nested": [1, 2]}});
        let back: Value = serde_json::from_str(&render(&value, true)).unwrap();
        assert_eq!(back, value);
        assert_eq!(render(&value, false), "value: {\"nested\":[1,2]}");
        let long = "x".repeat(100);
        let rows = [json!({ "v": long })];
        assert!(table(&rows).lines().nth(1).unwrap().ends_with('…'));
    }
}
