//! The handshake auth hook: the application decides before the 101 and its
//! per-connection data travels with the socket.

use std::time::Duration;

use tether::{
    ClientConfig, Error, Message, ServerConfig,
    handshake::{HandshakeError, server::Request},
};
use tokio::net::{TcpListener, TcpStream};

/// Who the hook let in.
#[derive(Debug, PartialEq)]
struct User(String);

async fn authorize(request: &Request) -> Result<User, HandshakeError> {
    // Stands in for a session lookup that awaits a database.
    tokio::time::sleep(Duration::from_millis(1)).await;
    match (request.cookie("session"), request.query()) {
        (Some("s3cret"), Some("csrf=token-1")) => Ok(User("ada".into())),
        (Some(_), _) => Err(HandshakeError::Refused {
            status: 403,
            reason: "missing or wrong CSRF token".into(),
        }),
        (None, _) => Err(HandshakeError::Refused {
            status: 401,
            reason: "log in first".into(),
        }),
    }
}

async fn server() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Vec<Result<User, String>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let config = ServerConfig::default();
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            let (tcp, _) = listener.accept().await.unwrap();
            match tether::accept_with(tcp, &config, authorize).await {
                Ok((mut ws, _request, user)) => {
                    ws.send(Message::text(format!("hello {}", user.0)))
                        .await
                        .unwrap();
                    outcomes.push(Ok(user));
                }
                Err(error) => outcomes.push(Err(error.to_string())),
            }
        }
        outcomes
    });
    (addr, task)
}

async fn connect(
    addr: std::net::SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> Result<Message, Error> {
    let mut config = ClientConfig::default();
    if let Some(cookie) = cookie {
        config.headers.push(("Cookie".into(), cookie.into()));
    }
    let tcp = TcpStream::connect(addr).await?;
    let (mut ws, _) = tether::client::handshake(tcp, &addr.to_string(), path, &config).await?;
    ws.recv().await.expect("a greeting")
}

#[tokio::test]
async fn hook_refuses_or_admits_with_per_connection_data() {
    let (addr, task) = server().await;
    let admitted = connect(addr, "/?csrf=token-1", Some("theme=dark; session=s3cret")).await;
    assert_eq!(admitted.unwrap(), Message::text("hello ada"));
    match connect(addr, "/", Some("session=s3cret")).await {
        Err(Error::ClientHandshake(error)) => assert!(error.to_string().contains("403"), "{error}"),
        other => panic!("expected a 403, got {other:?}"),
    }
    match connect(addr, "/?csrf=token-1", None).await {
        Err(Error::ClientHandshake(error)) => assert!(error.to_string().contains("401"), "{error}"),
        other => panic!("expected a 401, got {other:?}"),
    }
    let outcomes = task.await.unwrap();
    assert_eq!(outcomes[0], Ok(User("ada".into())));
    assert!(
        outcomes[1].as_ref().unwrap_err().contains("CSRF"),
        "{outcomes:?}"
    );
    assert!(
        outcomes[2].as_ref().unwrap_err().contains("log in"),
        "{outcomes:?}"
    );
}
