//! WebSocket server and client on tokio.
