//! The HTTP side of the gateway, in the order a request meets it: [`server`] accepts connections and
//! applies limits; [`service`] routes (operational endpoints, CORS preflight, the player, peer-assist);
//! [`deliver`] answers everything else from the cache, after [`path`] has refused unsafe request paths,
//! with [`range`] for byte ranges and validators. [`response`] holds the body type and the small text
//! answers every part sends; [`web`] is the embedded player.

pub mod cmcd;
pub mod conn;
pub mod deliver;
pub mod path;
pub mod range;
pub mod response;
pub mod send_rate;
pub mod server;
pub mod service;
pub mod tls;
pub mod web;

/// The address a request came from, put in its extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl ClientAddr {
    /// The client's IP address, from a request's extensions.
    pub fn of<B>(request: &::http::Request<B>) -> Option<std::net::IpAddr> {
        request.extensions().get::<ClientAddr>().map(|c| c.0.ip())
    }
}
