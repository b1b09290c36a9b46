//! The `broker` setting: `memory`, one or more Redis instances, or a Redis
//! Cluster.
//!
//! ```text
//!  memory
//!  redis://[user:password@]host[:port][/db]                 one instance
//!  redis://a:6379,redis://b:6379                            channels spread by consistent hashing
//!  redis+cluster://[user:password@]host:port[,host:port]    Redis Cluster (seed nodes)
//! ```
//!
//! In the TOML file the Redis forms may also be a list of the
//! comma-separated parts: `broker = ["redis://a:6379", "redis://b:6379"]`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

const CLUSTER_SCHEME: &str = "redis+cluster://";
const REDIS_SCHEME: &str = "redis://";

/// Where publications fan out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub(crate) enum Broker {
    /// In this process: one node.
    #[default]
    Memory,
    /// Through Redis: several nodes.
    Redis {
        /// The Redis instances or cluster.
        url: RedisServers,
    },
}

/// The Redis behind the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedisServers {
    /// Independent instances (`redis://` URLs, at least one); each channel
    /// lives on one of them, picked by consistent hashing of its name, so
    /// instances should only be appended to the list.
    Instances(Vec<String>),
    /// A Redis Cluster (7 or later), reached through these seed nodes
    /// (`redis://[user:password@]host:port` URLs).
    Cluster(Vec<String>),
}

impl std::str::FromStr for Broker {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "memory" {
            return Ok(Self::Memory);
        }
        let servers = match text.strip_prefix(CLUSTER_SCHEME) {
            Some(rest) => RedisServers::Cluster(parse_list(rest, |part| {
                let part = part.strip_prefix(CLUSTER_SCHEME).unwrap_or(part);
                let (_, database) = parse_url(part, text)?;
                if !database.is_empty() {
                    return Err(format!(
                        "{text:?}: a Redis Cluster has no databases (drop the \"/{database}\")"
                    ));
                }
                Ok(format!("{REDIS_SCHEME}{part}"))
            })?),
            None => RedisServers::Instances(parse_list(text, |part| {
                let rest = part
                    .strip_prefix(REDIS_SCHEME)
                    .ok_or_else(|| invalid(text))?;
                parse_url(rest, text)?;
                Ok(part.to_owned())
            })?),
        };
        Ok(Self::Redis { url: servers })
    }
}

/// The comma-separated parts of `text`, each checked by `parse`, without
/// repeats.
fn parse_list(
    text: &str,
    parse: impl Fn(&str) -> Result<String, String>,
) -> Result<Vec<String>, String> {
    let mut servers: Vec<String> = Vec::new();
    for part in text.split(',').map(str::trim) {
        let server = parse(part)?;
        if servers.contains(&server) {
            return Err(format!("{part:?} is listed twice"));
        }
        servers.push(server);
    }
    Ok(servers)
}

fn invalid(text: &str) -> String {
    format!(
        "{text:?} is not a broker (use \"memory\", \"redis://host:port\" (several separated \
         by commas) or \"redis+cluster://host:port,host:port\")"
    )
}

/// Checks `[user:password@]host[:port][/db]`; returns the host and the
/// database text.
fn parse_url<'a>(rest: &'a str, text: &str) -> Result<(&'a str, &'a str), String> {
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or_else(|| invalid(text))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or_else(|| invalid(text))?),
                ),
            }
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid(text));
    }
    if port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return Err(format!(
            "{text:?}: the port is not a number from 0 to 65535"
        ));
    }
    if !database.is_empty() && database.parse::<u32>().is_err() {
        return Err(format!(
            "{text:?}: the database after \"/\" is not a number"
        ));
    }
    Ok((host, database))
}

impl<'de> Deserialize<'de> for Broker {
    /// A string, or (for Redis) a list of the comma-separated parts.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            One(String),
            List(Vec<String>),
        }
        let text = match Text::deserialize(deserializer) {
            Ok(Text::One(text)) => text,
            Ok(Text::List(parts)) if !parts.is_empty() => parts.join(","),
            _ => {
                return Err(serde::de::Error::custom(
                    "expected a string or a non-empty list of strings",
                ));
            }
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl From<Broker> for String {
    fn from(broker: Broker) -> Self {
        broker.to_string()
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis { url } => url.fmt(f),
        }
    }
}

impl fmt::Display for RedisServers {
    /// The setting's text form, which parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Instances(urls) => f.write_str(&urls.join(",")),
            Self::Cluster(seeds) => {
                let hosts: Vec<&str> = seeds
                    .iter()
                    .map(|seed| seed.strip_prefix(REDIS_SCHEME).unwrap_or(seed))
                    .collect();
                write!(f, "{CLUSTER_SCHEME}{}", hosts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instances(urls: &[&str]) -> Broker {
        Broker::Redis {
            url: RedisServers::Instances(urls.iter().map(|url| (*url).to_owned()).collect()),
        }
    }

    #[test]
    fn single_and_sharded_redis() {
        for good in [
            "redis://127.0.0.1:6379",
            "redis://redis",
            "redis://:pw@redis:6380/1",
            "redis://user:p@ss@[::1]:6379",
        ] {
            assert_eq!(good.parse::<Broker>(), Ok(instances(&[good])), "{good}");
        }
        let two = "redis://a:6379, redis://b:6379/2".parse::<Broker>();
        assert_eq!(two, Ok(instances(&["redis://a:6379", "redis://b:6379/2"])));
        assert_eq!(
            two.map(|broker| broker.to_string()),
            Ok("redis://a:6379,redis://b:6379/2".to_owned())
        );
        assert_eq!("memory".parse::<Broker>(), Ok(Broker::Memory));
    }

    #[test]
    fn cluster_seeds() {
        let expected = Broker::Redis {
            url: RedisServers::Cluster(vec![
                "redis://10.0.0.1:7000".to_owned(),
                "redis://:pw@10.0.0.2:7000".to_owned(),
            ]),
        };
        for text in [
            "redis+cluster://10.0.0.1:7000,:pw@10.0.0.2:7000",
            "redis+cluster://10.0.0.1:7000,redis+cluster://:pw@10.0.0.2:7000",
        ] {
            assert_eq!(text.parse::<Broker>().as_ref(), Ok(&expected), "{text}");
        }
        assert_eq!(
            expected.to_string(),
            "redis+cluster://10.0.0.1:7000,:pw@10.0.0.2:7000"
        );
    }

    #[test]
    fn the_file_may_list_the_instances() {
        let config =
            crate::config::Config::from_toml("broker = [\"redis://a:6379\", \"redis://b:6379\"]")
                .expect("a list of instances");
        assert_eq!(
            config.broker,
            instances(&["redis://a:6379", "redis://b:6379"])
        );
        for bad in [
            "broker = []",
            "broker = [1]",
            "broker = [\"redis://a\", \"nats://b\"]",
        ] {
            assert!(crate::config::Config::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_brokers_are_refused_with_the_reason() {
        for bad in [
            "",
            "Memory",
            "redis://",
            "redis://host:port",
            "redis://h/x",
            "http://h",
            "redis://[::1",
            "redis://a,",
            "redis://a,b:1",
            "redis+cluster://",
            "redis+cluster://a:1,",
            "redis+cluster://a:1,redis://b:2",
        ] {
            assert!(bad.parse::<Broker>().is_err(), "{bad}");
        }
        assert_eq!(
            "redis://a:1,redis://a:1".parse::<Broker>(),
            Err("\"redis://a:1\" is listed twice".to_owned())
        );
        assert!(
            "redis+cluster://a:1/2"
                .parse::<Broker>()
                .is_err_and(|why| why.contains("no databases")),
        );
    }
}
