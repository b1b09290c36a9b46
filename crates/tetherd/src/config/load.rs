//! Layering: defaults ← file ← `TETHER_*` environment ← flags.
//!
//! The layers are merged as TOML trees over the serialized defaults, so the
//! defaults describe every key and its type: a key they lack is unknown,
//! and an environment variable or flag is read as the type of the default
//! it replaces. The merged tree then becomes a [`Config`]; when that fails,
//! each value is tried on its own over the defaults to name the key at
//! fault.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
};

use toml::{Table, Value};

use super::{Config, ConfigError, ConfigErrors, Namespace, validate::namespace_key};

/// The prefix of the environment variables that override keys.
const ENV_PREFIX: &str = "TETHER_";
/// The `[[namespace]]` array (not reachable from the environment).
const NAMESPACES: &str = "namespace";
/// Environment variables named after the flags, besides the key-path names.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("TETHER_API_KEY", "auth.api_key"),
    ("TETHER_TOKEN_SECRET", "auth.token_hmac_secret"),
];

/// Command-line flags that override the configuration (highest precedence).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Flags {
    /// Read settings from this TOML file; `tetherd config example` prints
    /// one with every key.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address for WebSocket, HTTP API, health and metrics, all on one port
    /// [default: 127.0.0.1:8000].
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// `memory`, or Redis to share channels between nodes: `redis://host:port`,
    /// several separated by commas (consistent hashing), or
    /// `redis+cluster://host:port,host:port` [default: memory].
    #[arg(long, value_name = "URLS")]
    pub(crate) broker: Option<String>,
    /// Runtime worker threads, 0 for one per CPU core, 1 for a single
    /// thread without work stealing [default: 0].
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<String>,
    /// Key for the HTTP API (auth.api_key). Command lines are visible to
    /// other local users: prefer TETHER_AUTH_API_KEY or the file.
    #[arg(long, value_name = "KEY")]
    pub(crate) api_key: Option<String>,
    /// HS256 secret of connection and subscription tokens
    /// (auth.token_hmac_secret). Prefer TETHER_AUTH_TOKEN_HMAC_SECRET or
    /// the file.
    #[arg(long, value_name = "SECRET")]
    pub(crate) token_secret: Option<String>,
    /// A web page origin allowed to connect (repeatable; replaces
    /// security.allow_origins): `https://app.example`,
    /// `https://*.example.com`, `null`, or `*` for any.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub(crate) allow_origins: Vec<String>,
    /// Refuse clients that send no Origin header
    /// (security.require_origin).
    #[arg(long)]
    pub(crate) require_origin: bool,
    /// Accept permessage-deflate compression from clients that offer it
    /// (compression.enabled).
    #[arg(long)]
    pub(crate) compression: bool,
    /// PEM certificate chain for wss:// (tls.cert; with --tls-key).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_cert: Option<String>,
    /// PEM private key of --tls-cert (tls.key).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_key: Option<String>,
}

impl Config {
    /// The configuration to run with: defaults, the `--config` file, the
    /// process's `TETHER_*` environment variables and `flags`, validated.
    pub(crate) fn load(flags: &Flags) -> Result<Self, ConfigErrors> {
        Self::load_from(flags, std::env::vars_os())
    }

    /// Like [`load`](Self::load), with the environment given.
    pub(crate) fn load_from(
        flags: &Flags,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigErrors> {
        let mut layers = Layers::new();
        if let Some(file) = &flags.config {
            layers.file(file);
        }
        layers.env(env);
        layers.flags(flags);
        layers.finish()
    }

    /// A config file's text over the defaults, validated; no environment,
    /// no flags.
    #[cfg(test)]
    pub(crate) fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let mut layers = Layers::new();
        layers.text(text, "config");
        layers.finish()
    }

    /// Every environment variable that sets a key, with its key path:
    /// `TETHER_` and the path uppercased, `.` becoming `_`
    /// (`TETHER_SECURITY_HANDSHAKE_TIMEOUT`), plus `TETHER_API_KEY` and
    /// `TETHER_TOKEN_SECRET` named after their flags.
    pub(crate) fn env_vars() -> Vec<(String, String)> {
        let mut vars: Vec<_> = leaf_paths(&defaults())
            .into_iter()
            .map(|path| (env_name(&path), path))
            .collect();
        vars.extend(
            ENV_ALIASES
                .iter()
                .map(|&(name, path)| (name.to_owned(), path.to_owned())),
        );
        vars
    }
}

/// The environment variable of a key path.
pub(crate) fn env_name(path: &str) -> String {
    format!("{ENV_PREFIX}{}", path.to_uppercase().replace('.', "_"))
}

/// The merged tree, where each overridden key came from, and the problems
/// found so far.
struct Layers {
    defaults: Table,
    namespace_defaults: Table,
    tree: Table,
    /// Key path → the environment variable or flag that set it.
    sources: BTreeMap<String, String>,
    errors: Vec<ConfigError>,
}

impl Layers {
    fn new() -> Self {
        let defaults = defaults();
        Self {
            tree: defaults.clone(),
            defaults,
            namespace_defaults: table_of(&Namespace::default()),
            sources: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    fn file(&mut self, path: &Path) {
        match fs::read_to_string(path) {
            Ok(text) => self.text(&text, &path.display().to_string()),
            Err(error) => self.errors.push(ConfigError::new(
                path.display().to_string(),
                format!("cannot read: {error}"),
            )),
        }
    }

    /// Merges a file's text; `name` labels syntax errors.
    fn text(&mut self, text: &str, name: &str) {
        match text.parse::<Table>() {
            Ok(table) => merge(
                &mut self.tree,
                table,
                "",
                &self.namespace_defaults,
                &mut self.errors,
            ),
            Err(error) => self
                .errors
                .push(ConfigError::new(name, error.to_string().trim_end())),
        }
    }

    fn env(&mut self, env: impl IntoIterator<Item = (OsString, OsString)>) {
        let known: BTreeMap<String, String> = Config::env_vars().into_iter().collect();
        // Key path → (variable, value) for each variable set; two names
        // for one key must agree. Unknown TETHER_* variables are left to
        // whoever set them (the test tools use a few).
        let mut set: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (name, value) in env {
            let Some(path) = name.to_str().and_then(|name| known.get(name)) else {
                continue;
            };
            let name = name.to_string_lossy().into_owned();
            let Ok(value) = value.into_string() else {
                self.errors.push(ConfigError {
                    key: path.clone(),
                    from: Some(name),
                    reason: "is not valid UTF-8".to_owned(),
                });
                continue;
            };
            match set.get(path) {
                Some((other, earlier)) if *earlier != value => {
                    self.errors.push(ConfigError {
                        key: path.clone(),
                        from: Some(format!("{other} and {name}")),
                        reason: "set to different values".to_owned(),
                    });
                }
                Some(_) => {}
                None => {
                    set.insert(path.clone(), (name, value));
                }
            }
        }
        for (path, (name, value)) in set {
            self.set_text(&path, &value, name);
        }
    }

    fn flags(&mut self, flags: &Flags) {
        let scalars = [
            ("listen", &flags.listen, "--listen"),
            ("broker", &flags.broker, "--broker"),
            ("threads", &flags.threads, "--threads"),
            ("auth.api_key", &flags.api_key, "--api-key"),
            (
                "auth.token_hmac_secret",
                &flags.token_secret,
                "--token-secret",
            ),
            ("tls.cert", &flags.tls_cert, "--tls-cert"),
            ("tls.key", &flags.tls_key, "--tls-key"),
        ];
        for (path, value, flag) in scalars {
            if let Some(value) = value {
                self.set_text(path, value, flag.to_owned());
            }
        }
        if !flags.allow_origins.is_empty() {
            let origins = flags.allow_origins.iter().cloned().map(Value::String);
            self.set(
                "security.allow_origins",
                Value::Array(origins.collect()),
                "--allow-origin".to_owned(),
            );
        }
        let switches = [
            (
                "security.require_origin",
                flags.require_origin,
                "--require-origin",
            ),
            ("compression.enabled", flags.compression, "--compression"),
        ];
        for (path, on, flag) in switches {
            if on {
                self.set(path, Value::Boolean(true), flag.to_owned());
            }
        }
    }

    /// Sets a key from text (an environment variable or a flag), read as
    /// the type of its default: `true`/`false`, a whole number, a
    /// comma-separated list, or a string.
    fn set_text(&mut self, path: &str, text: &str, from: String) {
        let value = match lookup(&self.defaults, path) {
            Some(Value::Boolean(_)) => match text {
                "true" => Ok(Value::Boolean(true)),
                "false" => Ok(Value::Boolean(false)),
                _ => Err(format!("{text:?} is not true or false")),
            },
            Some(Value::Integer(_)) => text
                .parse()
                .map(Value::Integer)
                .map_err(|_| format!("{text:?} is not a whole number")),
            Some(Value::Array(_)) => Ok(Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            )),
            _ => Ok(Value::String(text.to_owned())),
        };
        match value {
            Ok(value) => self.set(path, value, from),
            Err(reason) => self.errors.push(ConfigError {
                key: path.to_owned(),
                from: Some(from),
                reason,
            }),
        }
    }

    fn set(&mut self, path: &str, value: Value, from: String) {
        let (table, key) = parent(&mut self.tree, path);
        table.insert(key.to_owned(), value);
        self.sources.insert(path.to_owned(), from);
    }

    /// The config, or every problem found on the way, each naming its key.
    fn finish(mut self) -> Result<Config, ConfigErrors> {
        let mut unparsed = Vec::new();
        let config = match Value::Table(self.tree.clone()).try_into::<Config>() {
            Ok(config) => Some(config),
            Err(error) => {
                unparsed = self.locate_bad_values();
                if unparsed.is_empty() {
                    self.errors
                        .push(ConfigError::new("config", error.to_string().trim_end()));
                }
                // With the bad values back at their defaults, validation
                // can still report the other problems in the same run.
                Value::Table(self.tree.clone()).try_into::<Config>().ok()
            }
        };
        if let Some(config) = &config {
            if let Err(ConfigErrors(errors)) = config.validate() {
                let new = errors
                    .into_iter()
                    .filter(|error| !unparsed.contains(&error.key));
                self.errors.extend(new);
            }
        }
        for error in &mut self.errors {
            if error.from.is_none() {
                error.from = self.sources.get(&error.key).cloned();
            }
        }
        match config {
            Some(config) if self.errors.is_empty() => Ok(config),
            _ => Err(ConfigErrors(self.errors)),
        }
    }

    /// Tries each value alone over the defaults, to name the keys whose
    /// values do not parse; puts their defaults back in the tree and returns
    /// their key paths.
    fn locate_bad_values(&mut self) -> Vec<String> {
        let mut bad = Vec::new();
        for path in leaf_paths(&self.tree) {
            let mut candidate = self.defaults.clone();
            let (table, key) = parent(&mut candidate, &path);
            // Invariant: leaf_paths lists the tree's own leaves.
            let value = lookup(&self.tree, &path).expect("a leaf of the tree");
            table.insert(key.to_owned(), value.clone());
            if let Err(error) = Value::Table(candidate).try_into::<Config>() {
                self.errors.push(ConfigError::new(&path, error.message()));
                let default = lookup(&self.defaults, &path).cloned();
                let (table, key) = parent(&mut self.tree, &path);
                match default {
                    Some(default) => table.insert(key.to_owned(), default),
                    None => table.remove(key),
                };
                bad.push(path);
            }
        }
        let Some(Value::Array(namespaces)) = self.tree.get_mut(NAMESPACES) else {
            return bad;
        };
        for (index, entry) in namespaces.iter_mut().enumerate() {
            let Value::Table(entry) = entry else {
                continue;
            };
            let prefix = entry_key(entry, index);
            for (key, value) in entry.iter_mut() {
                let mut namespace = self.namespace_defaults.clone();
                namespace.insert(key.clone(), value.clone());
                let mut candidate = self.defaults.clone();
                candidate.insert(
                    NAMESPACES.to_owned(),
                    Value::Array(vec![Value::Table(namespace)]),
                );
                if let Err(error) = Value::Table(candidate).try_into::<Config>() {
                    let path = format!("{prefix}.{key}");
                    self.errors.push(ConfigError::new(&path, error.message()));
                    if let Some(default) = self.namespace_defaults.get(key) {
                        *value = default.clone();
                    }
                    bad.push(path);
                }
            }
        }
        bad
    }
}

/// The table holding `path` (a dotted path through tables of the defaults)
/// and the last key of the path.
fn parent<'t, 'p>(root: &'t mut Table, path: &'p str) -> (&'t mut Table, &'p str) {
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
fn merge(
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
fn entry_key(entry: &Table, index: usize) -> String {
    match entry.get("name") {
        Some(Value::String(name)) => namespace_key(name),
        _ => format!("{NAMESPACES}[{index}]"),
    }
}

/// A key of `table` close to the misspelt `key`, if one is.
fn suggestion<'a>(table: &'a Table, key: &str) -> Option<&'a str> {
    table
        .keys()
        .map(|candidate| (edit_distance(candidate, key), candidate))
        .filter(|&(distance, candidate)| distance <= 2.max(candidate.len() / 4))
        .min()
        .map(|(_, candidate)| candidate.as_str())
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
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
fn a(type_name: &str) -> String {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {type_name}")
    } else {
        format!("a {type_name}")
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The default config as a TOML tree.
fn defaults() -> Table {
    table_of(&Config::default())
}

fn table_of<T: serde::Serialize>(value: &T) -> Table {
    // Invariant: the config types serialize to tables (structs of strings,
    // numbers, booleans and lists).
    Table::try_from(value).expect("config types serialize to TOML tables")
}

/// The dotted paths of every value outside tables, except the namespaces.
fn leaf_paths(table: &Table) -> Vec<String> {
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

fn lookup<'a>(table: &'a Table, path: &str) -> Option<&'a Value> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Broker, RedisServers};

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|&(name, value)| (name.into(), value.into()))
            .collect()
    }

    fn messages(result: Result<Config, ConfigErrors>) -> Vec<String> {
        result
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml(""), Ok(Config::default()));
        assert_eq!(
            Config::load_from(&Flags::default(), env(&[])),
            Ok(Config::default())
        );
    }

    #[test]
    fn a_file_sets_keys_and_keeps_the_other_defaults() {
        let config = Config::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            broker = "redis://127.0.0.1:6379/2"
            [security]
            handshake_timeout = "2500ms"
            allow_origins = ["https://app.example"]
            [[namespace]]
            name = "chat"
            history_size = 50
            history_ttl = "1h"
            recovery = true
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(
            config.broker,
            Broker::Redis {
                url: RedisServers::Instances(vec!["redis://127.0.0.1:6379/2".into()])
            }
        );
        assert_eq!(
            config.security.handshake_timeout,
            Duration::from_millis(2500)
        );
        assert_eq!(config.security.allow_origins, ["https://app.example"]);
        assert_eq!(config.security.max_connections, 100_000);
        assert_eq!(
            config.namespaces.len(),
            1,
            "the file's list replaces the built-in one"
        );
        assert_eq!(config.namespaces[0].history_ttl, Duration::from_secs(3600));
        assert!(!config.namespaces[0].presence);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        assert_eq!(
            messages(Config::from_toml(
                "colour = 1\n[security]\nping_intervall = \"5s\"\n[[namespace]]\nname = \"chat\"\nhistory = 5\n[metrics]\nport = 1"
            )),
            [
                "colour: unknown key",
                "metrics: unknown key",
                "namespace[\"chat\"].history: unknown key",
                "security.ping_intervall: unknown key (did you mean security.ping_interval?)",
            ]
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        assert_eq!(
            messages(Config::from_toml(
                "[security]\nhandshake_timeout = \"10x\"\nmax_connections = -1\nrequire_origin = \"yes\""
            )),
            [
                "security.handshake_timeout: \"10x\" is not a duration (use 10s, 500ms, 5m)",
                "security.max_connections: invalid value: integer `-1`, expected usize",
                "security.require_origin: invalid type: string \"yes\", expected a boolean",
            ]
        );
        assert_eq!(
            messages(Config::from_toml(
                "listen = \"localhost\"\nbroker = \"nats://x\"\nlog_format = \"xml\"\ntls = 1\n[[namespace]]\nname = \"a\"\nhistory_ttl = \"forever\""
            )),
            [
                "tls: expected a [tls] table, found an integer",
                "broker: \"nats://x\" is not a broker (use \"memory\", \"redis://host:port\" (several separated by commas) or \"redis+cluster://host:port,host:port\")",
                "listen: \"localhost\" is not an address (use IP:port, e.g. 127.0.0.1:8000 or [::]:8000)",
                "log_format: unknown variant `xml`, expected `text` or `json`",
                "namespace[\"a\"].history_ttl: \"forever\" is not a duration (use 10s, 500ms, 5m)",
            ]
        );
    }

    #[test]
    fn bad_values_do_not_hide_the_other_problems() {
        assert_eq!(
            messages(Config::from_toml(
                "[security]\nhandshake_timeout = \"10x\"\n[tls]\ncert = \"a.pem\"\n\
                 [[namespace]]\nname = \"chat\"\nrecovery = true\nhistory_size = 5\nhistory_ttl = \"1y\""
            )),
            [
                "security.handshake_timeout: \"10x\" is not a duration (use 10s, 500ms, 5m)",
                "namespace[\"chat\"].history_ttl: \"1y\" is not a duration (use 10s, 500ms, 5m)",
                "tls.key: is empty but tls.cert is set: set both or neither",
                "namespace[\"chat\"].recovery: needs history: set history_size and history_ttl",
            ]
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let errors = messages(Config::from_toml("listen = \n"));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("config: TOML parse error at line 1"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_both() {
        let dir = std::env::temp_dir().join(format!("tetherd-config-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tether.toml");
        fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\nbroker = \"redis://file:6379\"\n[auth]\napi_key = \"from-the-file-0123456789\"\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(file.clone()),
            ..Flags::default()
        };
        let vars = env(&[
            ("TETHER_LISTEN", "127.0.0.1:7001"),
            ("TETHER_API_KEY", "from-the-environment-0123"),
            (
                "TETHER_SECURITY_ALLOW_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("TETHER_SECURITY_REQUIRE_ORIGIN", "true"),
            ("TETHER_SECURITY_MAX_CONNECTIONS", "5"),
            ("TETHER_SECURITY_IDLE_TIMEOUT", "0s"),
            ("TETHER_PYTHON", "/usr/bin/python3"),
        ]);
        let config = Config::load_from(&flags, vars.clone()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.broker.to_string(), "redis://file:6379");
        assert_eq!(config.auth.api_key, "from-the-environment-0123");
        assert_eq!(
            config.security.allow_origins,
            ["https://a.example", "https://b.example"]
        );
        assert!(config.security.require_origin);
        assert_eq!(config.security.max_connections, 5);
        assert_eq!(config.security.idle_timeout, Duration::ZERO);

        let flags = Flags {
            listen: Some("127.0.0.1:7002".into()),
            api_key: Some("from-the-command-line-01".into()),
            token_secret: Some("s".repeat(32)),
            allow_origins: vec!["*".into()],
            broker: Some("memory".into()),
            threads: Some("2".into()),
            ..flags
        };
        let config = Config::load_from(&flags, vars).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7002");
        assert_eq!(config.threads, 2);
        assert_eq!(config.broker, Broker::Memory);
        assert_eq!(config.auth.api_key, "from-the-command-line-01");
        assert_eq!(config.auth.token_hmac_secret, "s".repeat(32));
        assert_eq!(config.security.allow_origins, ["*"]);
        assert!(
            config.security.require_origin,
            "the environment still applies"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overrides_are_refused_naming_key_and_source() {
        let flags = Flags {
            listen: Some("nowhere".into()),
            ..Flags::default()
        };
        assert_eq!(
            messages(Config::load_from(
                &flags,
                env(&[
                    ("TETHER_SECURITY_HANDSHAKE_TIMEOUT", "10x"),
                    ("TETHER_SECURITY_REQUIRE_ORIGIN", "yes"),
                    ("TETHER_DRAIN_DEADLINE", "0s"),
                    ("TETHER_API_KEY", "one-value-0123456789"),
                    ("TETHER_AUTH_API_KEY", "another-value-0123456"),
                ])
            )),
            [
                "auth.api_key (from TETHER_API_KEY and TETHER_AUTH_API_KEY): set to different values",
                "security.require_origin (from TETHER_SECURITY_REQUIRE_ORIGIN): \"yes\" is not true or false",
                "listen (from --listen): \"nowhere\" is not an address (use IP:port, e.g. 127.0.0.1:8000 or [::]:8000)",
                "security.handshake_timeout (from TETHER_SECURITY_HANDSHAKE_TIMEOUT): \"10x\" is not a duration (use 10s, 500ms, 5m)",
                "drain.deadline (from TETHER_DRAIN_DEADLINE): must be longer than 0s",
            ]
        );
        let missing = Flags {
            config: Some("/nonexistent/tether.toml".into()),
            ..Flags::default()
        };
        let errors = messages(Config::load_from(&missing, env(&[])));
        assert!(
            errors[0].starts_with("/nonexistent/tether.toml: cannot read:"),
            "{errors:?}"
        );
    }

    #[test]
    fn flags_parse_from_a_command_line() {
        use clap::Parser;

        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            flags: Flags,
        }
        let cli = Cli::try_parse_from([
            "tetherd",
            "--config",
            "tether.toml",
            "--listen",
            "0.0.0.0:8000",
            "--broker",
            "redis://redis:6379",
            "--api-key",
            "key",
            "--token-secret",
            "secret",
            "--allow-origin",
            "https://a.example",
            "--allow-origin",
            "https://b.example",
        ])
        .unwrap();
        let flags = cli.flags;
        assert_eq!(flags.config.as_deref(), Some(Path::new("tether.toml")));
        assert_eq!(flags.listen.as_deref(), Some("0.0.0.0:8000"));
        assert_eq!(flags.broker.as_deref(), Some("redis://redis:6379"));
        assert_eq!(flags.api_key.as_deref(), Some("key"));
        assert_eq!(flags.token_secret.as_deref(), Some("secret"));
        assert_eq!(
            flags.allow_origins,
            ["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn every_scalar_key_has_an_environment_variable() {
        let vars = Config::env_vars();
        let names: Vec<&str> = vars.iter().map(|(name, _)| name.as_str()).collect();
        for expected in [
            "TETHER_LISTEN",
            "TETHER_BROKER",
            "TETHER_LOG_FORMAT",
            "TETHER_TLS_CERT",
            "TETHER_SECURITY_ALLOW_ORIGINS",
            "TETHER_SECURITY_HANDSHAKE_TIMEOUT",
            "TETHER_AUTH_API_KEY",
            "TETHER_API_KEY",
            "TETHER_AUTH_TOKEN_HMAC_SECRET",
            "TETHER_CLIENT_OUTBOUND_QUEUE_BYTES",
            "TETHER_DRAIN_DEADLINE",
        ] {
            assert!(names.contains(&expected), "{expected} in {names:?}");
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "two keys share a variable");
        assert!(!names.iter().any(|name| name.contains("NAMESPACE")));
    }
}
