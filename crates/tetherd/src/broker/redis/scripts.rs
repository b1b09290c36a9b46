//! The Lua scripts that keep a channel's offset, epoch, history and
//! presence consistent: each runs atomically on the Redis that holds the
//! channel (its keys share a hash slot, see `keys`).

use ::redis::Script;

/// Appends a publication to a channel's stream and publishes it; the
/// published copy also carries the epoch (`e`, see `wire`).
///
/// KEYS: meta, history. ARGV: pub/sub channel, new epoch (used when the
/// stream has none), encoded publication without its offset (a JSON object),
/// LTRIM start (`-size`, or empty to keep nothing), TTL in milliseconds,
/// the publish command (`PUBLISH`, or `SPUBLISH` under Redis Cluster).
/// Returns `{offset, epoch}`.
const PUBLISH_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
local head = '{"o":' .. string.format('%d', offset) .. ','
local rest = string.sub(ARGV[3], 2)
if ARGV[4] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('RPUSH', KEYS[2], head .. rest)
  redis.call('LTRIM', KEYS[2], ARGV[4], -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call(ARGV[6], ARGV[1], head .. '"e":' .. cjson.encode(epoch) .. ',' .. rest)
return {offset, epoch}
"#;

/// Reads a channel's history, creating its epoch when it has none, with the
/// meaning of [`HistoryQuery`](crate::broker::HistoryQuery).
///
/// KEYS: meta, history. ARGV: new epoch, TTL in milliseconds of a stream
/// without publications, `1` when a since position is given, its offset, its
/// epoch, limit (`-1`: none), `1` for newest first. Returns
/// `{offset, epoch, ok, publications}`, `ok` 0 when the since position
/// cannot be answered; publications oldest first (the caller reverses).
const HISTORY_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
if offset == 0 and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local kept = redis.call('LLEN', KEYS[2])
local reverse = ARGV[7] == '1'
local first, last = 0, kept
if ARGV[3] == '1' then
  local since = tonumber(ARGV[4])
  if ARGV[5] ~= epoch or since > offset then
    return {offset, epoch, 0, {}}
  end
  local after = offset - since
  if reverse then
    last = math.max(0, kept - after - 1)
  elseif after > kept then
    return {offset, epoch, 0, {}}
  else
    first = kept - after
  end
end
local limit = tonumber(ARGV[6])
if limit >= 0 then
  if reverse then
    first = math.max(first, last - limit)
  else
    last = math.min(last, first + limit)
  end
end
local items = {}
if first < last then
  items = redis.call('LRANGE', KEYS[2], first, last - 1)
end
return {offset, epoch, 1, items}
"#;

/// Adds or refreshes a presence entry, using the server's clock.
///
/// KEYS: presence hash, expiry zset. ARGV: client id, encoded info, TTL in
/// milliseconds.
const ADD_PRESENCE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
local keep = ttl
local current = redis.call('PTTL', KEYS[2])
if current > keep then keep = current end
if keep < 1 then keep = 1 end
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return 1
"#;

/// Drops expired presence entries (server clock) and returns the live ones.
///
/// KEYS: presence hash, expiry zset.
const PRESENCE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 1, #expired, 500 do
  redis.call('HDEL', KEYS[1], unpack(expired, i, math.min(i + 499, #expired)))
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
return redis.call('HVALS', KEYS[1])
"#;

/// The scripts, loaded once per broker (`EVALSHA`, then `EVAL` when a
/// Redis does not know them yet).
pub(super) struct Scripts {
    pub(super) publish: Script,
    pub(super) history: Script,
    pub(super) add_presence: Script,
    pub(super) presence: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH_LUA),
            history: Script::new(HISTORY_LUA),
            add_presence: Script::new(ADD_PRESENCE_LUA),
            presence: Script::new(PRESENCE_LUA),
        }
    }
}
