//! The pages served by the gateway: written here, embedded in the binary.

/// The live demo at `/`.
pub(crate) const DEMO: &str = include_str!("../assets/demo.html");

/// The dashboard at `/admin`.
pub(crate) const ADMIN: &str = include_str!("../assets/admin.html");

/// The browser client, served at `/tether.js`.
pub(crate) const CLIENT_JS: &str = include_str!("../assets/tether.js");

/// The logo both pages show, served at `/tether.svg`.
pub(crate) const LOGO_SVG: &str = include_str!("../assets/tether.svg");
