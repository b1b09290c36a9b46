//! History reads with `since` and `reverse`, the same cases for both
//! engines: Centrifugo pages backwards from `since` (the publications before
//! it, newest first), where reading forward recovers what came after it.

use std::time::Duration;

use bytes::Bytes;

use super::{Broker, BrokerError, HistoryOptions, HistoryQuery, Publication, StreamPosition};

/// Publishes `"1"` … `"5"` into `channel`, keeping at most `size`.
async fn publish_five(broker: &dyn Broker, channel: &str, size: usize) -> StreamPosition {
    let keep = HistoryOptions {
        size,
        ttl: Duration::from_secs(60),
    };
    let mut last = None;
    for i in 1..=5 {
        let publication = Publication {
            offset: 0,
            data: Bytes::from(format!("\"{i}\"")),
            info: None,
            tags: Vec::new(),
        };
        last = Some(broker.publish(channel, publication, Some(keep)).await);
    }
    last.expect("published").expect("the broker is up")
}

/// The offsets a query returns, after checking the position it reports and
/// that each publication is the one published at its offset.
async fn read(
    broker: &dyn Broker,
    channel: &str,
    top: &StreamPosition,
    since: u64,
    limit: Option<usize>,
    reverse: bool,
) -> Result<Vec<u64>, BrokerError> {
    let query = HistoryQuery {
        since: Some(StreamPosition {
            offset: since,
            epoch: top.epoch.clone(),
        }),
        limit,
        reverse,
    };
    let history = broker.history(channel, query).await?;
    assert_eq!(&history.position, top, "the position is the channel's top");
    for publication in &history.publications {
        let data = format!("\"{}\"", publication.offset);
        assert_eq!(
            publication.data,
            data.as_bytes(),
            "at {}",
            publication.offset
        );
    }
    Ok(history.publications.iter().map(|p| p.offset).collect())
}

/// Runs every case against `broker`; channels `paging:*` must be unused.
pub(super) async fn since_with_reverse_pages_backwards(broker: &dyn Broker) {
    let all = "paging:all-kept";
    let top = publish_five(broker, all, 10).await;
    assert_eq!(top.offset, 5);
    let back = async |since, limit| read(broker, all, &top, since, limit, true).await;
    assert_eq!(back(5, None).await, Ok(vec![4, 3, 2, 1]), "from the newest");
    assert_eq!(back(5, Some(2)).await, Ok(vec![4, 3]), "first page");
    assert_eq!(back(3, Some(2)).await, Ok(vec![2, 1]), "next page");
    assert_eq!(back(3, Some(9)).await, Ok(vec![2, 1]));
    assert_eq!(back(2, None).await, Ok(vec![1]));
    assert_eq!(back(1, None).await, Ok(vec![]), "nothing before the first");
    assert_eq!(back(0, None).await, Ok(vec![]), "nothing before offset 1");
    assert_eq!(back(3, Some(0)).await, Ok(vec![]), "only the position");
    // Forward, for contrast: what came after `since`.
    let forward = async |since| read(broker, all, &top, since, None, false).await;
    assert_eq!(forward(3).await, Ok(vec![4, 5]));
    assert_eq!(forward(5).await, Ok(vec![]));

    // Positions that never were in this stream, either direction.
    for reverse in [true, false] {
        assert_eq!(
            read(broker, all, &top, 6, None, reverse).await,
            Err(BrokerError::UnrecoverablePosition),
            "past the top, reverse: {reverse}"
        );
        for epoch in ["other", ""] {
            let query = HistoryQuery {
                since: Some(StreamPosition {
                    offset: 3,
                    epoch: epoch.to_owned(),
                }),
                limit: None,
                reverse,
            };
            assert_eq!(
                broker.history(all, query).await,
                Err(BrokerError::UnrecoverablePosition),
                "epoch {epoch:?}, reverse: {reverse}"
            );
        }
    }

    // Only 3, 4 and 5 are kept: paging backwards ends where history ends,
    // without an error, while recovering forward across the gap fails.
    let trimmed = "paging:trimmed";
    let top = publish_five(broker, trimmed, 3).await;
    let back = async |since, limit| read(broker, trimmed, &top, since, limit, true).await;
    assert_eq!(back(5, None).await, Ok(vec![4, 3]));
    assert_eq!(back(5, Some(1)).await, Ok(vec![4]));
    assert_eq!(back(4, Some(1)).await, Ok(vec![3]));
    assert_eq!(back(3, None).await, Ok(vec![]), "2 is gone");
    assert_eq!(back(2, None).await, Ok(vec![]), "since is gone itself");
    assert_eq!(
        read(broker, trimmed, &top, 1, None, false).await,
        Err(BrokerError::UnrecoverablePosition)
    );
}
