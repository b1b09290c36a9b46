//! The HTTP/1.1 upgrade (RFC 6455 §4): request and response heads.
