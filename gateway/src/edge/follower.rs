//! The live playlist follower. While a live rendition is being watched, the gateway reloads its
//! playlist itself just after the next segment is due at the origin ([`schedule`](super::schedule)
//! learns when that is), stores each answer for viewers (a followed playlist stays fresh as long as
//! the follower keeps it so) and prefetches the segments that appear, so viewers see a new segment
//! moments after the origin does, hit a warm cache, and every new segment has a digest before any
//! peer asks for it. A rendition nobody asked for during `idle_after` (and at least
//! three target durations: players reload a watched playlist every target duration) is dropped, so a
//! rendition viewers switched away from stops costing origin fetches within seconds.
//!
//! This is the async shell: one task per followed rendition, sleeping in real time between reloads.
//! What is followed and every decision live in [`followed`](super::followed); "when" is always the
//! gateway [`Clock`](crate::clock::Clock), so a rendition goes idle when that clock says so.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::cache::CachedObject;
use crate::edge::blocking;
use crate::edge::followed::{follow_path, Touch};
use crate::edge::schedule::{Reload, Schedule};
use crate::edge::{Edge, Lookup, ObjectRef};
use crate::hls::ObjectClass;

/// Notes that a viewer (from `client`) asked for the live playlist `object`; starts following it if
/// needed. What is followed is the origin object: the path in canonical form, without the viewer's
/// query, so every spelling and query variant of one playlist shares one follower.
pub fn touch(edge: &Arc<Edge>, object: &ObjectRef, client: Option<IpAddr>) -> Touch {
    let followed = ObjectRef::from_path(&follow_path(&object.path));
    let touch = edge.follower.touch(&followed.key, client, edge.clock.now());
    match touch {
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
    touch
}

async fn run(edge: Arc<Edge>, object: ObjectRef) {
    let mut target = Duration::from_secs(2);
    let mut schedule: Option<Schedule> = None;
    // LL-HLS with blocking reloads at the origin: the directives asking for the next part, and the
    // live edge (segment, parts) of the last copy.
    let mut blocking: Option<String> = None;
    let mut position: Option<(u64, u64)> = None;
    loop {
        // Idleness is judged by the gateway clock (tests drive it); the schedule by real time.
        if edge.follower.is_idle(&object.key, edge.clock.now(), target) {
            break;
        }
        let sent = Instant::now();
        let (current, started, done) = match first_copy(&edge, &object, schedule.is_none()).await {
            // The viewer's request that started following it has just fetched it.
            Some((copy, done)) => (Ok(copy), false, done),
            None => {
                let asked = ObjectRef {
                    origin_query: blocking.clone(),
                    ..object.clone()
                };
                let (reload, started) = edge.reload(&asked);
                (reload.result.await, started, Instant::now())
            }
        };
        let blocked = blocking.take().is_some();
        let next = match current {
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
                let low_latency = playlist
                    .playlist
                    .as_ref()
                    .and_then(|info| info.low_latency)
                    .filter(|ll| ll.can_block_reload);
                if let Some(ll) = low_latency {
                    // The part the origin announced is fetched once, now; the origin answers
                    // when it exists, and every viewer that asks meanwhile gets it as it arrives.
                    if let Some(info) = &playlist.playlist {
                        for hint in &info.hints {
                            edge.prefetch(&ObjectRef::from_path(hint)).await;
                        }
                    }
                    // The origin holds a request for the next part until it exists: ask at once.
                    let now_at = (ll.next_msn, ll.trailing_parts);
                    let new = position.is_none_or(|p| now_at > p);
                    position = Some(now_at);
                    edge.metrics
                        .follower_reload(if new { "new" } else { "unchanged" });
                    blocking = Some(blocking::next_part_query(&ll));
                    // An origin that answered at once with nothing new does not hold: pace it.
                    let pause = if new || !blocked {
                        Duration::ZERO
                    } else {
                        ll.part_target.max(MIN_BLOCKING_PAUSE)
                    };
                    tokio::time::sleep_until(done + pause).await;
                    continue;
                }
                let schedule = schedule.get_or_insert_with(|| Schedule::new(target));
                let newest = schedule.newest();
                if let Some(info) = &playlist.playlist {
                    let reload = Reload {
                        // Joined a fetch someone else started: its start is unknown.
                        sent: started.then(|| sent.into_std()),
                        done: done.into_std(),
                        wall: SystemTime::now(),
                    };
                    schedule.observe(reload, target, &info.timeline);
                }
                let result = if schedule.newest() > newest {
                    "new"
                } else {
                    "unchanged"
                };
                edge.metrics.follower_reload(result);
                Instant::from_std(schedule.next_reload(done.into_std()))
            }
            // A blocking reload refused (the origin disagrees on the next part): ask plainly.
            Ok(refused) if blocked && refused.status.is_client_error() => {
                edge.metrics.follower_reload("failed");
                done + Duration::from_millis(100)
            }
            Ok(refused) if refused.status.is_client_error() => {
                // Without the viewer's query the origin will not give it (a token, say): nothing
                // to follow, and no reason to ask again at every viewer request.
                edge.follower.refuse(&object.key, edge.clock.now());
                tracing::info!(key = %object.key, status = %refused.status, "origin refused the follower; not following");
                return;
            }
            _ => {
                edge.metrics.follower_reload("failed");
                done + Duration::from_millis(500)
            }
        };
        tokio::time::sleep_until(next).await;
    }
    edge.follower.stop(&object.key);
    tracing::info!(key = %object.key, "stopped following idle rendition");
}

/// At the first reload, the copy in the cache if it was just fetched (a viewer's request started
/// following it), and when it was.
async fn first_copy(
    edge: &Edge,
    object: &ObjectRef,
    first: bool,
) -> Option<(Arc<CachedObject>, Instant)> {
    if !first {
        return None;
    }
    let Lookup::Fresh(copy) = edge.lookup(&object.key).await else {
        return None;
    };
    let age = copy.age(edge.clock.now());
    let now = Instant::now();
    (age <= JUST_FETCHED).then(|| (copy, now.checked_sub(age).unwrap_or(now)))
}

/// The least pause between blocking reloads that brought nothing new (an origin that does not
/// hold them).
const MIN_BLOCKING_PAUSE: Duration = Duration::from_millis(100);

/// A copy this young is the one the request that started the follower fetched.
const JUST_FETCHED: Duration = Duration::from_millis(250);
