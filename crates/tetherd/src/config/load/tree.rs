//! Helpers over TOML trees: merging a layer over the defaults, finding a
//! key's table, listing leaf paths, and suggesting a key for a misspelt one.

use toml::{Table, Value};

use super::{ENTRY_ARRAYS, NAMESPACES};
use crate::config::{Config, ConfigError};

/// Namespace keys of earlier versions, with what replaced them: a config
/// that still has one is refused with this advice, never read with a new
/// meaning. (Permissions now deny by default, with Centrifugo's options.)
const REPLACED_NAMESPACE_KEYS: &[(&str, &str)] = &[
    (
        "allow_publish",
        "was replaced: use allow_publish_for_subscriber (clients subscribed to the channel) or \
         allow_publish_for_client (any client), with allow_publish_for_anonymous for anonymous clients",
    ),
    (
        "allow_anonymous",
        "was replaced: anonymous clients now need allow_subscribe_for_anonymous (next to \
         allow_subscribe_for_client) and the allow_*_for_anonymous options",
    ),
    (
        "subscription_token_required",
        "was removed: a subscription needs a token unless allow_subscribe_for_client, a \
         user-limited channel or the connection token grants it; delete the key",
    ),
];

/// Keys of Centrifugo's proxy object that Tether does not have, with why:
/// a config moved over from Centrifugo is refused with this, not a bare
/// "unknown key".
const UNSUPPORTED_PROXY_KEYS: &[(&str, &str)] = &[
    (
        "grpc",
        "gRPC proxies are not supported: use an http:// or https:// endpoint",
    ),
    (
        "grpc_metadata",
        "gRPC proxies are not supported: use an http:// or https:// endpoint",
    ),
    (
        "emulated_headers",
        "header emulation is not supported: forward real headers with http_headers",
    ),
    (
        "include_connection_meta",
        "connection meta is not supported: the backend gets client and user in every request",
    ),
    (
        "binary_encoding",
        "Tether speaks the JSON protocol: payloads are JSON, b64data answers are decoded",
    ),
    (
        "status_to_code_transforms",
        "not supported: any status but 200 is the temporary error 100",
    ),
];

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

/// Each array of tables (`[[namespace]]`, `[[proxies]]`, …) with the
/// defaults its entries are merged over.
pub(super) type EntryDefaults = [(&'static str, Table)];

/// Tables whose keys are the user's (header names), not the defaults'.
const FREE_TABLES: &[&str] = &["static_headers"];

/// Merges `over` into `base`: tables key by key, anything else replaced
/// whole; each entry of an array of tables over its defaults.
pub(super) fn merge(
    base: &mut Table,
    over: Table,
    prefix: &str,
    entry_defaults: &EntryDefaults,
    errors: &mut Vec<ConfigError>,
) {
    for (key, value) in over {
        let path = join(prefix, &key);
        let Some(slot) = base.get_mut(&key) else {
            let in_proxy = prefix.contains("proxy") || prefix.starts_with("proxies");
            let replaced = REPLACED_NAMESPACE_KEYS
                .iter()
                .find(|(old, _)| prefix.starts_with(NAMESPACES) && *old == key)
                .or_else(|| {
                    UNSUPPORTED_PROXY_KEYS
                        .iter()
                        .find(|(unsupported, _)| in_proxy && *unsupported == key)
                });
            let reason = match (replaced, suggestion(base, &key)) {
                (Some((_, advice)), _) => (*advice).to_owned(),
                (None, Some(near)) => {
                    format!("unknown key (did you mean {}?)", join(prefix, near))
                }
                (None, None) => "unknown key".to_owned(),
            };
            errors.push(ConfigError::new(path, reason));
            continue;
        };
        match (slot, value) {
            (slot @ Value::Table(_), Value::Table(over)) if FREE_TABLES.contains(&key.as_str()) => {
                *slot = Value::Table(over);
            }
            (Value::Table(base), Value::Table(over)) => {
                merge(base, over, &path, entry_defaults, errors);
            }
            (Value::Table(_), other) => errors.push(ConfigError::new(
                path.clone(),
                format!("expected a [{path}] table, found {}", a(other.type_str())),
            )),
            (slot, Value::Array(entries)) => match entry_defaults_of(entry_defaults, &path) {
                Some(defaults) => {
                    *slot = Value::Array(merge_entries(
                        &path,
                        entries,
                        defaults,
                        entry_defaults,
                        errors,
                    ))
                }
                None => *slot = Value::Array(entries),
            },
            (slot, value) => *slot = value,
        }
    }
}

/// Each entry of the array of tables at `path` merged over `defaults`.
fn merge_entries(
    path: &str,
    entries: Vec<Value>,
    defaults: &Table,
    entry_defaults: &EntryDefaults,
    errors: &mut Vec<ConfigError>,
) -> Vec<Value> {
    let mut merged = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        match entry {
            Value::Table(entry) => {
                let key = entry_key(path, &entry, index);
                let mut full = defaults.clone();
                merge(&mut full, entry, &key, entry_defaults, errors);
                merged.push(Value::Table(full));
            }
            other => errors.push(ConfigError::new(
                format!("{path}[{index}]"),
                format!("expected a [[{path}]] table, found {}", a(other.type_str())),
            )),
        }
    }
    merged
}

/// The defaults of the entries of the array of tables at `path`, if it is one.
pub(super) fn entry_defaults_of<'a>(
    entry_defaults: &'a EntryDefaults,
    path: &str,
) -> Option<&'a Table> {
    entry_defaults
        .iter()
        .find(|(array, _)| *array == path)
        .map(|(_, defaults)| defaults)
}

/// How errors name an entry of the array of tables at `path`: by its name
/// (`namespace["chat"]`), or by its place when the name is missing or not
/// a string.
pub(super) fn entry_key(path: &str, entry: &Table, index: usize) -> String {
    match entry.get("name") {
        Some(Value::String(name)) => format!("{path}[{name:?}]"),
        _ => format!("{path}[{index}]"),
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

/// The dotted paths of every value outside tables, except the arrays of
/// tables.
pub(super) fn leaf_paths(table: &Table) -> Vec<String> {
    fn walk(table: &Table, prefix: &str, paths: &mut Vec<String>) {
        for (key, value) in table {
            let path = join(prefix, key);
            match value {
                Value::Table(inner) => walk(inner, &path, paths),
                _ if ENTRY_ARRAYS.contains(&path.as_str()) => {}
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
