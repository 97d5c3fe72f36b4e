//! Where a dotted key (`api.0.upstream`) sits in the TOML file: the spans
//! `toml_edit` keeps, walked through tables, arrays of tables and inline
//! tables, down to the deepest part that exists.

/// Byte offset of the key at `path` in the document (or of the deepest
/// enclosing item found).
pub(super) fn locate(doc: &toml_edit::ImDocument<String>, path: &[&str]) -> Option<usize> {
    locate_item(doc.as_item(), path, None)
}

fn locate_item(item: &toml_edit::Item, path: &[&str], found: Option<usize>) -> Option<usize> {
    use toml_edit::Item;
    let Some((part, rest)) = path.split_first() else {
        return found;
    };
    match item {
        Item::Table(table) => locate_table(table, part, rest, found),
        Item::ArrayOfTables(array) => match part.parse::<usize>().ok().and_then(|i| array.get(i)) {
            Some(table) => {
                let here = table.span().map(|s| s.start).or(found);
                match rest.split_first() {
                    Some((key, rest)) => locate_table(table, key, rest, here),
                    None => here,
                }
            }
            None => found,
        },
        Item::Value(value) => locate_value(value, path, found),
        Item::None => found,
    }
}

fn locate_table(
    table: &toml_edit::Table,
    key: &str,
    rest: &[&str],
    found: Option<usize>,
) -> Option<usize> {
    match table.get_key_value(key) {
        Some((k, v)) => {
            let here = k.span().or_else(|| v.span()).map(|s| s.start).or(found);
            locate_item(v, rest, here)
        }
        None => found,
    }
}

fn locate_value(value: &toml_edit::Value, path: &[&str], found: Option<usize>) -> Option<usize> {
    use toml_edit::Value;
    let Some((part, rest)) = path.split_first() else {
        return found;
    };
    match value {
        Value::InlineTable(table) => match table.get_key_value(part) {
            Some((k, v)) => {
                let here = k.span().or_else(|| v.span()).map(|s| s.start).or(found);
                locate_item(v, rest, here)
            }
            None => found,
        },
        Value::Array(array) => match part.parse::<usize>().ok().and_then(|i| array.get(i)) {
            Some(v) => locate_value(v, rest, v.span().map(|s| s.start).or(found)),
            None => found,
        },
        _ => found,
    }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}
