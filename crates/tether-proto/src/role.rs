//! Which end of the connection we are.

/// The asymmetry of RFC 6455: clients mask every frame (§5.3), servers refuse
/// unmasked frames and clients refuse masked ones (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection; masks what it sends.
    Client,
    /// Accepted the connection; never masks.
    Server,
}

impl Role {
    /// Whether frames *received* in this role must carry a mask.
    pub fn expects_masked_input(self) -> bool {
        self == Self::Server
    }
}
