//! The live playlist follower. While a live rendition is being watched, the gateway reloads its
//! playlist itself at the RFC 8216 §6.3.4 interval (a target duration after a change, half of one after
//! none) and prefetches the segments that appear, so viewers hit a warm cache and every new segment has
//! a digest before any peer asks for it. A rendition nobody asked for during `idle_after` (and at least
//! three target durations: players reload a watched playlist every target duration) is dropped, so a
//! rendition viewers switched away from stops costing origin fetches within seconds.
//!
//! This is the async shell: one task per followed rendition, sleeping in real time between reloads.
//! What is followed and every decision live in [`followed`](super::followed); "when" is always the
//! gateway [`Clock`](crate::clock::Clock), so a rendition goes idle when that clock says so.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::edge::followed::{follow_path, reload_interval, Touch};
use crate::edge::{Edge, Lookup, ObjectRef};
use crate::hls::ObjectClass;

/// Notes that a viewer (from `client`) asked for the live playlist `object`; starts following it if
/// needed. What is followed is the origin object: the path in canonical form, without the viewer's
/// query, so every spelling and query variant of one playlist shares one follower.
pub fn touch(edge: &Arc<Edge>, object: &ObjectRef, client: Option<IpAddr>) {
    let followed = ObjectRef::from_path(&follow_path(&object.path));
    match edge.follower.touch(&followed.key, client, edge.clock.now()) {
        Touch::Started => {
            tracing::info!(key = %followed.key, "following live rendition");
            tokio::spawn(run(Arc::clone(edge), followed));
        }
        Touch::AtLimit => {
            edge.metrics.follower_refused("limit");
            tracing::debug!(key = %followed.key, "follower is at its rendition limit");
        }
        Touch::ClientAtLimit => {
            edge.metrics.follower_refused("client_limit");
            tracing::debug!(key = %followed.key, ?client, "client started as many followed renditions as it may");
        }
        Touch::Disabled | Touch::Renewed | Touch::Refused => {}
    }
}

async fn run(edge: Arc<Edge>, object: ObjectRef) {
    let mut last_etag = None;
    let mut target = Duration::from_secs(2);
    loop {
        // Idleness is judged by the gateway clock (tests drive it); only the waits below are real.
        if edge.follower.is_idle(&object.key, edge.clock.now(), target) {
            break;
        }
        let current = match edge.lookup(&object.key).await {
            Lookup::Fresh(fresh) => Ok(fresh),
            _ => edge.fetch(&object).0.result.await,
        };
        let wait = match current {
            Ok(playlist) if playlist.is_success() => {
                // Also covers the playlist stored just before the rendition became followed.
                if let Some(info) = &playlist.playlist {
                    for reference in edge.follower.new_references(&object.key, info) {
                        edge.prefetch(&ObjectRef::from_path(&reference.path)).await;
                    }
                }
                if playlist.class != ObjectClass::LiveMedia {
                    break; // It ended (EXT-X-ENDLIST): nothing more will appear.
                }
                target = playlist.target_duration().unwrap_or(target);
                let changed = last_etag.as_ref() != Some(&playlist.etag);
                last_etag = Some(playlist.etag.clone());
                reload_interval(target, changed)
            }
            Ok(refused) if refused.status.is_client_error() => {
                // Without the viewer's query the origin will not give it (a token, say): nothing
                // to follow, and no reason to ask again at every viewer request.
                edge.follower.refuse(&object.key, edge.clock.now());
                tracing::info!(key = %object.key, status = %refused.status, "origin refused the follower; not following");
                return;
            }
            _ => Duration::from_millis(500),
        };
        tokio::time::sleep(wait).await;
    }
    edge.follower.stop(&object.key);
    tracing::info!(key = %object.key, "stopped following idle rendition");
}
