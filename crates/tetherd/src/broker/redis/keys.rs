//! The Redis names of a channel: its keys and its pub/sub channel.
//!
//! Every name of a channel carries the same hash tag (`{…}`, a hash of the
//! channel name), so under Redis Cluster they share one hash slot: the
//! scripts may touch them together and the channel's sharded pub/sub lives
//! on the node that holds its history and presence. The channel name
//! follows the tag, so a name can be read back (and by people in
//! `redis-cli`). The tag is hex, never a brace, whatever the channel name.

/// Prefix of every pub/sub channel the broker publishes to.
const PUB_PREFIX: &str = "tether.pub.";

/// The hash tag of the node registry's keys (see [`registry_keys`]).
const REGISTRY_TAG: &str = "{registry}";

/// The names of one channel in Redis.
pub(super) struct ChannelKeys {
    /// Hash: `e` epoch, `s` offset of the latest publication.
    pub(super) meta: String,
    /// List of encoded publications, oldest first.
    pub(super) history: String,
    /// Hash: client id → encoded client info.
    pub(super) presence: String,
    /// Sorted set: client id scored by its expiry (Redis server ms).
    pub(super) presence_expiry: String,
    /// The pub/sub (or sharded pub/sub) channel of publications, joins and
    /// leaves.
    pub(super) pubsub: String,
}

impl ChannelKeys {
    pub(super) fn new(channel: &str) -> Self {
        let tagged = format!("{{{:016x}}}{channel}", channel_hash(channel));
        Self {
            meta: format!("tether.meta.{tagged}"),
            history: format!("tether.history.{tagged}"),
            presence: format!("tether.presence.{tagged}"),
            presence_expiry: format!("tether.presence.exp.{tagged}"),
            pubsub: format!("{PUB_PREFIX}{tagged}"),
        }
    }
}

/// The node registry's keys: a hash of node id → announcement and a sorted
/// set of node id → expiry, like a channel's presence.
pub(super) fn registry_keys() -> (String, String) {
    (
        format!("tether.nodes.{REGISTRY_TAG}"),
        format!("tether.nodes.exp.{REGISTRY_TAG}"),
    )
}

/// The hub's channel name of a Redis pub/sub channel name, if it is one of
/// ours.
pub(super) fn channel_of_pubsub(name: &[u8]) -> Option<&str> {
    let tagged = name.strip_prefix(PUB_PREFIX.as_bytes())?;
    let tagged = std::str::from_utf8(tagged).ok()?;
    let (_, channel) = tagged.strip_prefix('{')?.split_once('}')?;
    Some(channel)
}

/// A stable 64-bit hash of a channel name: the same on every node and
/// every build (FNV-1a, finished with a SplitMix64 mix so that nearby
/// names spread well). It picks the hash tag and, with several Redis
/// instances, the instance.
pub(super) fn channel_hash(channel: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Jump consistent hashing (Lamping and Veach, 2014): the bucket in
/// `0..buckets` for `key`. Growing the list from n to n + 1 buckets moves
/// only about 1/(n + 1) of the keys, all of them to the new bucket.
pub(super) fn jump_bucket(mut key: u64, buckets: usize) -> usize {
    let buckets = i64::try_from(buckets).unwrap_or(i64::MAX);
    let (mut bucket, mut next) = (-1_i64, 0_i64);
    while next < buckets {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let step = f64::from(1_u32 << 31) / ((key >> 33) as f64 + 1.0);
        next = ((bucket + 1) as f64 * step) as i64;
    }
    usize::try_from(bucket.max(0)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channels_names_share_one_hash_tag_whatever_its_name() {
        for channel in ["chat:lobby", "a}b", "}", "{x}", "", "ünï{cödé"] {
            let keys = ChannelKeys::new(channel);
            let names = [
                &keys.meta,
                &keys.history,
                &keys.presence,
                &keys.presence_expiry,
                &keys.pubsub,
            ];
            let tags: Vec<&str> = names.iter().map(|name| hash_tag(name)).collect();
            assert!(tags.iter().all(|tag| *tag == tags[0] && tag.len() == 16));
            assert_eq!(channel_of_pubsub(keys.pubsub.as_bytes()), Some(channel));
        }
        assert_ne!(
            hash_tag(&ChannelKeys::new("a").meta),
            hash_tag(&ChannelKeys::new("b").meta)
        );
        assert_eq!(channel_of_pubsub(b"other"), None);
        assert_eq!(channel_of_pubsub(b"tether.pub.untagged"), None);
    }

    /// What Redis Cluster hashes: the text between the first `{` and the
    /// next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("a tag");
        let close = key[open..].find('}').expect("a closed tag");
        &key[open + 1..open + close]
    }

    #[test]
    fn the_channel_hash_is_stable() {
        // Nodes of different builds must agree: these values never change.
        assert_eq!(channel_hash(""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(channel_hash("chat:lobby"), channel_hash("chat:lobby"));
        assert_ne!(channel_hash("chat:lobby"), channel_hash("chat:lobbz"));
    }

    #[test]
    fn jump_hashing_is_balanced_and_moves_few_channels() {
        let channels: Vec<u64> = (0..10_000)
            .map(|i| channel_hash(&format!("chat:{i}")))
            .collect();
        let mut counts = [0_usize; 3];
        for &key in &channels {
            counts[jump_bucket(key, 3)] += 1;
        }
        assert!(
            counts.iter().all(|&n| (3_000..3_700).contains(&n)),
            "{counts:?}"
        );
        let moved: Vec<(usize, usize)> = channels
            .iter()
            .map(|&key| (jump_bucket(key, 3), jump_bucket(key, 4)))
            .filter(|(three, four)| three != four)
            .collect();
        assert!(
            moved.iter().all(|&(_, to)| to == 3),
            "only to the new bucket"
        );
        assert!((2_000..3_000).contains(&moved.len()), "{}", moved.len());
        assert!(channels.iter().all(|&key| jump_bucket(key, 1) == 0));
    }
}
