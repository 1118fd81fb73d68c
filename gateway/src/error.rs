//! Errors at the gateway's edges, classified by who caused them, so that the HTTP status, the retry
//! decision and the metric label follow from the type.

use http::StatusCode;

/// Why fetching an object from the origin failed. The origin's fault unless stated otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("origin did not connect in time")]
    ConnectTimeout,
    #[error("origin sent no response headers in time")]
    FirstByteTimeout,
    #[error("origin did not finish the body in time")]
    TotalTimeout,
    #[error("origin connection failed: {0}")]
    Connect(String),
    #[error("origin body truncated: {got} of {expected} bytes")]
    Truncated { expected: u64, got: u64 },
    #[error("origin body broken: {0}")]
    Body(String),
    #[error("origin body larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("every origin's circuit is open")]
    CircuitOpen,
    #[error("origin playlist refused: {0}")]
    Playlist(peer_assist::hls::ParseError),
    /// A 3xx the gateway would not follow (outside the origin's base, too many hops, no
    /// `Location`): viewers never see an origin's internal `Location`.
    #[error("origin redirect not followed: {0}")]
    Redirect(String),
    /// A 200 for a media object with no body, or shorter than a playlist's byte range says.
    #[error("origin media body too short: {got} bytes, at least {expected} expected")]
    ShortBody { expected: u64, got: u64 },
    /// Our fault (overload): the bytes all origin fetches may buffer at once are taken.
    #[error("origin bodies in flight already hold the {0}-byte budget")]
    MemoryBudget(u64),
    /// Our fault (overload): no origin connection slot was free before the deadline.
    #[error("no origin connection slot free in time")]
    QueueTimeout,
    /// Our fault: a bug or a resource problem in the gateway.
    #[error("internal error: {0}")]
    Internal(String),
}

impl FetchError {
    /// The status a viewer gets.
    pub fn status(&self) -> StatusCode {
        match self {
            FetchError::ConnectTimeout
            | FetchError::FirstByteTimeout
            | FetchError::TotalTimeout => StatusCode::GATEWAY_TIMEOUT,
            FetchError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            FetchError::MemoryBudget(_) | FetchError::QueueTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether another attempt (maybe at another origin) could succeed.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            FetchError::TooLarge(_)
                | FetchError::CircuitOpen
                | FetchError::Internal(_)
                | FetchError::Playlist(_)
                | FetchError::Redirect(_)
                | FetchError::MemoryBudget(_)
                | FetchError::QueueTimeout
        )
    }

    /// The `outcome` label of `gateway_origin_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            FetchError::ConnectTimeout
            | FetchError::FirstByteTimeout
            | FetchError::TotalTimeout => "timeout",
            FetchError::Connect(_) => "connect_error",
            FetchError::Truncated { .. } | FetchError::Body(_) => "truncated",
            FetchError::TooLarge(_) => "too_large",
            FetchError::CircuitOpen => "circuit_open",
            FetchError::Playlist(_) => "bad_playlist",
            FetchError::Redirect(_) => "redirect",
            FetchError::ShortBody { .. } => "short_body",
            FetchError::MemoryBudget(_) => "memory_budget",
            FetchError::QueueTimeout => "queue_timeout",
            FetchError::Internal(_) => "internal",
        }
    }
}
