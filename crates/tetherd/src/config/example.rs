//! The commented example config and the tests that keep it equal to the
//! tree: same values as `Config::default()`, every field present, each
//! commented with its doc comment and environment variable.

/// The commented example, every key at its default: what `tetherd config
/// example` prints and `config/tether.example.toml` holds.
pub(crate) const EXAMPLE: &str = include_str!("example.toml");

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{Config, load};

    #[test]
    fn the_example_is_the_defaults() {
        assert_eq!(Config::from_toml(EXAMPLE), Ok(Config::default()));
    }

    #[test]
    fn the_example_is_committed_as_config_tether_example_toml() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/tether.example.toml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == EXAMPLE,
            "config/tether.example.toml differs from `tetherd config example`; \
             run `cargo run -p tetherd -- config example > config/tether.example.toml`"
        );
    }

    /// Each field's doc comment opens its comment in the example, and each
    /// key outside the namespaces names its environment variable there; so
    /// every field appears in the example.
    #[test]
    fn the_example_comments_every_field_with_its_doc() {
        let docs = field_docs(concat!(
            include_str!("../config.rs"),
            include_str!("proxy.rs")
        ));
        let defaults = toml::Table::try_from(Config::default()).expect("a table");
        let comments = example_comments(EXAMPLE);
        let sections = [
            ("Config", ""),
            ("Tls", "tls"),
            ("Security", "security"),
            ("Auth", "auth"),
            ("Client", "client"),
            ("Compression", "compression"),
            ("Drain", "drain"),
            ("Namespace", "namespace"),
            ("ClientProxies", "client.proxy"),
            ("ClientHook", "client.proxy.connect"),
            ("ConnectHook", "client.proxy.connect"),
            ("Proxy", "client.proxy.connect"),
            ("ProxyHttp", "client.proxy.connect.http"),
            ("Channel", "channel"),
            ("ChannelProxies", "channel.proxy"),
            ("Rpc", "rpc"),
            ("RpcOptions", "rpc.without_namespace"),
        ];
        let mut checked = 0;
        for (structure, section) in sections {
            let fields = &docs[structure];
            assert!(!fields.is_empty(), "{structure} has fields");
            for (key, doc) in fields {
                let path = if section.is_empty() {
                    key.clone()
                } else {
                    format!("{section}.{key}")
                };
                // A key's comment, or a table's: the one above its header.
                let Some(comment) = comments
                    .get(&(section.to_owned(), key.clone()))
                    .or_else(|| comments.get(&(String::new(), path.clone())))
                else {
                    panic!("the example lacks {path}");
                };
                assert!(
                    comment.starts_with(doc.as_str()),
                    "{path}: the example's comment\n  {comment}\ndoes not start with the doc comment\n  {doc}"
                );
                // Tables, arrays of tables and the namespaces' keys are set
                // in the file only.
                let in_file_only = section == "namespace"
                    || ["namespace", "proxies", "rpc.namespaces"].contains(&path.as_str())
                    || matches!(lookup(&defaults, &path), Some(toml::Value::Table(_)));
                if !in_file_only {
                    let env = load::env_name(&path);
                    assert!(
                        comment.contains(&format!("Env: {env}")),
                        "{path}: names {env}"
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(
            checked,
            14 + 2 + 15 + 5 + 6 + 4 + 1 + 24 + (3 + 1 + 2 + 5 + 1) + (1 + 3) + (3 + 2),
            "every field is checked"
        );
    }

    /// The value at a dotted path of tables.
    fn lookup<'a>(table: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
        let (first, rest) = path
            .split_once('.')
            .map_or((path, None), |(a, b)| (a, Some(b)));
        match (table.get(first)?, rest) {
            (toml::Value::Table(inner), Some(rest)) => lookup(inner, rest),
            (value, None) => Some(value),
            _ => None,
        }
    }

    /// `struct name → [(key, doc text)]` from the config modules' source;
    /// flattened fields are the inner struct's.
    fn field_docs(source: &str) -> BTreeMap<String, Vec<(String, String)>> {
        let mut docs = BTreeMap::new();
        let (mut current, mut doc, mut rename) = (None::<String>, Vec::new(), None);
        let mut flatten = false;
        for line in source.lines() {
            let trimmed = line.trim();
            if let Some(name) = trimmed
                .strip_prefix("pub(crate) struct ")
                .and_then(|rest| rest.strip_suffix(" {"))
            {
                current = Some(name.to_owned());
                doc.clear();
                docs.entry(name.to_owned()).or_insert_with(Vec::new);
            } else if line == "}" {
                current = None;
            } else if let Some(structure) = &current {
                if let Some(text) = trimmed.strip_prefix("///") {
                    doc.push(text.trim().to_owned());
                } else if let Some(name) = trimmed
                    .strip_prefix("#[serde(rename = \"")
                    .and_then(|rest| rest.strip_suffix("\")]"))
                {
                    rename = Some(name.to_owned());
                } else if trimmed == "#[serde(flatten)]" {
                    flatten = true;
                } else if let Some(field) = trimmed
                    .strip_prefix("pub(crate) ")
                    .and_then(|rest| rest.split_once(':'))
                {
                    let key = rename.take().unwrap_or_else(|| field.0.to_owned());
                    if std::mem::take(&mut flatten) {
                        doc.clear();
                        continue;
                    }
                    docs.get_mut(structure)
                        .expect("entered above")
                        .push((key, doc.join(" ")));
                    doc.clear();
                }
            }
        }
        docs
    }

    /// `(section, key) → the comment lines above it, joined`, for keys,
    /// `[tables]` and the first `[[array]]` entry (whose keys are the
    /// section's).
    fn example_comments(example: &str) -> BTreeMap<(String, String), String> {
        let mut comments = BTreeMap::new();
        let (mut section, mut block) = (String::new(), Vec::new());
        for line in example.lines() {
            if let Some(text) = line.strip_prefix('#') {
                block.push(text.trim());
                continue;
            }
            let comment = block.join(" ");
            block.clear();
            let header = line
                .strip_prefix("[[")
                .and_then(|rest| rest.strip_suffix("]]"))
                .or_else(|| {
                    line.strip_prefix('[')
                        .and_then(|rest| rest.strip_suffix(']'))
                });
            if let Some(name) = header {
                let first = !comments.contains_key(&(String::new(), name.to_owned()));
                section = if first {
                    name.to_owned()
                } else {
                    format!("{name} (again)")
                };
                comments
                    .entry((String::new(), name.to_owned()))
                    .or_insert(comment);
            } else if let Some((key, _)) = line.split_once(" = ") {
                comments.insert((section.clone(), key.to_owned()), comment);
            }
        }
        comments
    }
}
