//! Helpers over TOML trees: merging a layer over the defaults, finding a
//! key's table, listing leaf paths, and suggesting a key for a misspelt one.

use toml::{Table, Value};

use super::NAMESPACES;
use crate::config::{Config, ConfigError, validate::namespace_key};

/// The table holding `path` (a dotted path through tables of the defaults)
/// and the last key of the path.
pub(super) fn parent<'t, 'p>(root: &'t mut Table, path: &'p str) -> (&'t mut Table, &'p str) {
    let (tables, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut table = root;
    for name in tables.split('.').filter(|name| !name.is_empty()) {
        // Invariant: paths come from the defaults' tables, which the merged
        // tree keeps (merge refuses to replace a table with a value).
        let Some(Value::Table(inner)) = table.get_mut(name) else {
            unreachable!("{path} is a key of the defaults");
        };
        table = inner;
    }
    (table, key)
}

/// Merges `over` into `base`: tables key by key, anything else replaced
/// whole; `[[namespace]]` entries each over the namespace defaults.
pub(super) fn merge(
    base: &mut Table,
    over: Table,
    prefix: &str,
    namespace_defaults: &Table,
    errors: &mut Vec<ConfigError>,
) {
    for (key, value) in over {
        let path = join(prefix, &key);
        let Some(slot) = base.get_mut(&key) else {
            let reason = match suggestion(base, &key) {
                Some(near) => format!("unknown key (did you mean {}?)", join(prefix, near)),
                None => "unknown key".to_owned(),
            };
            errors.push(ConfigError::new(path, reason));
            continue;
        };
        match (slot, value) {
            (Value::Table(base), Value::Table(over)) => {
                merge(base, over, &path, namespace_defaults, errors);
            }
            (Value::Table(_), other) => errors.push(ConfigError::new(
                path.clone(),
                format!("expected a [{path}] table, found {}", a(other.type_str())),
            )),
            (slot, Value::Array(entries)) if path == NAMESPACES => {
                let mut merged = Vec::with_capacity(entries.len());
                for (index, entry) in entries.into_iter().enumerate() {
                    match entry {
                        Value::Table(entry) => {
                            let key = entry_key(&entry, index);
                            let mut namespace = namespace_defaults.clone();
                            merge(&mut namespace, entry, &key, namespace_defaults, errors);
                            merged.push(Value::Table(namespace));
                        }
                        other => errors.push(ConfigError::new(
                            format!("{NAMESPACES}[{index}]"),
                            format!(
                                "expected a [[{NAMESPACES}]] table, found {}",
                                a(other.type_str())
                            ),
                        )),
                    }
                }
                *slot = Value::Array(merged);
            }
            (slot, value) => *slot = value,
        }
    }
}

/// How errors name a `[[namespace]]` entry: by its name, or by its place
/// when the name is missing or not a string.
pub(super) fn entry_key(entry: &Table, index: usize) -> String {
    match entry.get("name") {
        Some(Value::String(name)) => namespace_key(name),
        _ => format!("{NAMESPACES}[{index}]"),
    }
}

/// A key of `table` close to the misspelt `key`, if one is.
pub(super) fn suggestion<'a>(table: &'a Table, key: &str) -> Option<&'a str> {
    table
        .keys()
        .map(|candidate| (edit_distance(candidate, key), candidate))
        .filter(|&(distance, candidate)| distance <= 2.max(candidate.len() / 4))
        .min()
        .map(|(_, candidate)| candidate.as_str())
}

/// Levenshtein distance, by characters.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// A TOML type name with its article: "a string", "an integer".
pub(super) fn a(type_name: &str) -> String {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {type_name}")
    } else {
        format!("a {type_name}")
    }
}

pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The default config as a TOML tree.
pub(super) fn defaults() -> Table {
    table_of(&Config::default())
}

pub(super) fn table_of<T: serde::Serialize>(value: &T) -> Table {
    // Invariant: the config types serialize to tables (structs of strings,
    // numbers, booleans and lists).
    Table::try_from(value).expect("config types serialize to TOML tables")
}

/// The dotted paths of every value outside tables, except the namespaces.
pub(super) fn leaf_paths(table: &Table) -> Vec<String> {
    fn walk(table: &Table, prefix: &str, paths: &mut Vec<String>) {
        for (key, value) in table {
            let path = join(prefix, key);
            match value {
                Value::Table(inner) => walk(inner, &path, paths),
                _ if path == NAMESPACES => {}
                _ => paths.push(path),
            }
        }
    }
    let mut paths = Vec::new();
    walk(table, "", &mut paths);
    paths
}

pub(super) fn lookup<'a>(table: &'a Table, path: &str) -> Option<&'a Value> {
    let (first, rest) = match path.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (path, None),
    };
    match (table.get(first)?, rest) {
        (Value::Table(inner), Some(rest)) => lookup(inner, rest),
        (value, None) => Some(value),
        (_, Some(_)) => None,
    }
}
