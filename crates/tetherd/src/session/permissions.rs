//! Who may do what in a channel, without a subscription token: what the
//! namespace's allow_* options grant, user-limited channels, and the
//! connection token's `caps`. Everything else is denied (103).

use super::Session;
pub(super) use crate::auth::Permission;
use crate::{auth, config::Namespace};

/// Channels starting with this need a subscription token even where
/// allow_subscribe_for_client is on (Centrifugo's private prefix).
const PRIVATE_PREFIX: char = '$';

/// Separates a user-limited channel's name from its users: `dialog:#42,43`.
const USER_BOUNDARY: char = '#';

impl Session {
    /// Whether this connection may do `permission` in `channel` (of
    /// `namespace`) without a subscription token.
    pub(super) fn granted(
        &self,
        permission: Permission,
        channel: &str,
        namespace: &Namespace,
    ) -> bool {
        let caps = self
            .extras
            .as_ref()
            .map_or(&[][..], |extras| &extras.caps[..]);
        if auth::granted(caps, permission, channel) {
            return true;
        }
        let anonymous = self.user().is_empty();
        let subscribed = self.sub(channel).is_some();
        match permission {
            Permission::Subscribe => {
                (namespace.allow_user_limited_channels && !anonymous && self.is_listed_in(channel))
                    || (namespace.allow_subscribe_for_client
                        && (!anonymous || namespace.allow_subscribe_for_anonymous)
                        && !channel.starts_with(PRIVATE_PREFIX))
            }
            Permission::Publish => {
                (namespace.allow_publish_for_client
                    || (namespace.allow_publish_for_subscriber && subscribed))
                    && (!anonymous || namespace.allow_publish_for_anonymous)
            }
            Permission::Presence => {
                (namespace.allow_presence_for_client
                    || (namespace.allow_presence_for_subscriber && subscribed))
                    && (!anonymous || namespace.allow_presence_for_anonymous)
            }
            Permission::History => {
                (namespace.allow_history_for_client
                    || (namespace.allow_history_for_subscriber && subscribed))
                    && (!anonymous || namespace.allow_history_for_anonymous)
            }
        }
    }

    /// Whether `channel` is user-limited (`…#42,43`) and lists this user.
    fn is_listed_in(&self, channel: &str) -> bool {
        channel
            .rsplit_once(USER_BOUNDARY)
            .is_some_and(|(_, users)| users.split(',').any(|user| user == self.user()))
    }
}
