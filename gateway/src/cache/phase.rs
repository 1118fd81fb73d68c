//! The phase a request went through in the cache, as in Pingora's cache phases: served fresh, served
//! stale while revalidating, the request that started the origin fetch, one that joined it, or no
//! answer at all. Delivery picks one per request; it names the `X-Cache` header and the `result` label
//! of `gateway_cache_results_total`. Both sets of values are a contract with dashboards and players.

/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePhase {
    /// Fresh in the cache.
    Hit,
    /// Nothing servable in the cache: this request started the origin fetch.
    Miss,
    /// Nothing servable in the cache: this request joined the origin fetch already running.
    Coalesced,
    /// Past its freshness but within its stale window: served while one background fetch revalidates.
    Stale,
    /// No answer from the cache or the origin: the fetch failed, or a live playlist is past its stale
    /// bound and the origin could not replace it.
    Error,
}

impl CachePhase {
    /// Every phase, in [`index`](Self::index) order.
    pub const ALL: [CachePhase; 5] = [
        CachePhase::Hit,
        CachePhase::Miss,
        CachePhase::Coalesced,
        CachePhase::Stale,
        CachePhase::Error,
    ];

    /// The `result` label of `gateway_cache_results_total`.
    pub fn label(self) -> &'static str {
        match self {
            CachePhase::Hit => "hit",
            CachePhase::Miss => "miss",
            CachePhase::Coalesced => "coalesced",
            CachePhase::Stale => "stale",
            CachePhase::Error => "error",
        }
    }

    /// The value of the `X-Cache` response header.
    pub fn x_cache(self) -> &'static str {
        match self {
            CachePhase::Hit => "HIT",
            CachePhase::Miss => "MISS",
            CachePhase::Coalesced => "COALESCED",
            CachePhase::Stale => "STALE",
            CachePhase::Error => "ERROR",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_headers_are_the_contract() {
        let named: Vec<_> = CachePhase::ALL
            .iter()
            .map(|p| (p.label(), p.x_cache()))
            .collect();
        assert_eq!(
            named,
            [
                ("hit", "HIT"),
                ("miss", "MISS"),
                ("coalesced", "COALESCED"),
                ("stale", "STALE"),
                ("error", "ERROR"),
            ]
        );
        for (i, phase) in CachePhase::ALL.iter().enumerate() {
            assert_eq!(phase.index(), i);
        }
    }
}
