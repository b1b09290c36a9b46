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

use super::{Config, ConfigError, ConfigErrors, NamedProxy, Namespace, RpcNamespace};

#[cfg(test)]
mod tests;
mod tree;

use tree::{defaults, entry_key, leaf_paths, lookup, merge, parent, table_of};

/// The prefix of the environment variables that override keys.
const ENV_PREFIX: &str = "TETHER_";
/// The `[[namespace]]` array.
const NAMESPACES: &str = "namespace";
/// The arrays of tables (not reachable from the environment).
const ENTRY_ARRAYS: [&str; 3] = [NAMESPACES, "proxies", "rpc.namespaces"];
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
    /// What each entry of [`ENTRY_ARRAYS`] is merged over.
    entry_defaults: Vec<(&'static str, Table)>,
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
            entry_defaults: vec![
                (NAMESPACES, table_of(&Namespace::default())),
                ("proxies", table_of(&NamedProxy::default())),
                ("rpc.namespaces", table_of(&RpcNamespace::default())),
            ],
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
                &self.entry_defaults,
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
        for (array, defaults) in &self.entry_defaults {
            let (table, last) = parent(&mut self.tree, array);
            let Some(Value::Array(entries)) = table.get_mut(last) else {
                continue;
            };
            for (index, entry) in entries.iter_mut().enumerate() {
                let Value::Table(entry) = entry else {
                    continue;
                };
                let prefix = entry_key(array, entry, index);
                for (key, value) in entry.iter_mut() {
                    let mut alone = defaults.clone();
                    alone.insert(key.clone(), value.clone());
                    let mut candidate = self.defaults.clone();
                    let (table, last) = parent(&mut candidate, array);
                    table.insert(last.to_owned(), Value::Array(vec![Value::Table(alone)]));
                    if let Err(error) = Value::Table(candidate).try_into::<Config>() {
                        let path = format!("{prefix}.{key}");
                        self.errors.push(ConfigError::new(&path, error.message()));
                        if let Some(default) = defaults.get(key) {
                            *value = default.clone();
                        }
                        bad.push(path);
                    }
                }
            }
        }
        bad
    }
}
