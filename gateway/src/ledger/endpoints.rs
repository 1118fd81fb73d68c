//! `GET /p2p/v1/ledger?epoch=N` (an epoch's totals and root; no `epoch`: the current one so far)
//! and `GET /p2p/v1/ledger/proof?epoch=N&receipt=ID` (one receipt and its inclusion proof). Public:
//! the ledger holds keys and byte counts, nothing a viewer did not sign for others to see.

use http::{Request, Response, StatusCode};
use peer_assist::accounting::{merkle, Receipt};

use super::{unix_ms, Ledger};
use crate::http::response::{text, text_response, Body};

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `epoch` parameter: absent → the current epoch; not a number → `None` (400).
fn epoch_param(ledger: &Ledger, query: Option<&str>) -> Option<u64> {
    match query_param(query, "epoch") {
        None | Some("") => Some(ledger.epoch_at(unix_ms())),
        Some(v) => v.parse().ok(),
    }
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => {
            let mut r = text_response(StatusCode::OK, "application/json", body);
            r.headers_mut().insert(
                http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                http::HeaderValue::from_static("*"),
            );
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Response<Body> {
    tracing::warn!(error = %e, "ledger read failed");
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the ledger cannot be read right now\n",
    )
}

/// Answers `/p2p/v1/ledger` and `/p2p/v1/ledger/proof`; `None` for other paths.
pub async fn respond<B>(ledger: Option<&Ledger>, request: &Request<B>) -> Option<Response<Body>> {
    let path = request.uri().path();
    if path != "/p2p/v1/ledger" && path != "/p2p/v1/ledger/proof" {
        return None;
    }
    let Some(ledger) = ledger else {
        return Some(text(
            StatusCode::NOT_FOUND,
            "this gateway keeps no ledger\n",
        ));
    };
    let query = request.uri().query();
    let Some(epoch) = epoch_param(ledger, query) else {
        return Some(text(
            StatusCode::BAD_REQUEST,
            "epoch must be a whole number (Unix time / epoch length)\n",
        ));
    };
    if path == "/p2p/v1/ledger" {
        return Some(match ledger.view(epoch, unix_ms()).await {
            Ok(view) => json(&view),
            Err(e) => unavailable(e),
        });
    }
    let Some(id) = query_param(query, "receipt") else {
        return Some(text(
            StatusCode::BAD_REQUEST,
            "receipt=ID (the receipt's id, hex) is required\n",
        ));
    };
    let view = match ledger.view(epoch, unix_ms()).await {
        Ok(v) => v,
        Err(e) => return Some(unavailable(e)),
    };
    let receipts = match ledger.store().receipts(epoch).await {
        Ok(r) => r,
        Err(e) => return Some(unavailable(e)),
    };
    // The tree of a sealed epoch is the sealed one (nothing is added after the seal).
    let Some(index) = receipts.iter().position(|r| r.id() == id) else {
        return Some(text(
            StatusCode::NOT_FOUND,
            "no such receipt in that epoch\n",
        ));
    };
    let leaves: Vec<[u8; 32]> = receipts.iter().map(Receipt::leaf_hash).collect();
    let path: Vec<String> = merkle::inclusion_proof(&leaves, index)
        .unwrap_or_default()
        .iter()
        .map(hex::encode)
        .collect();
    let body = serde_json::json!({
        "epoch": epoch,
        "receipt": receipts[index],
        "id": id,
        "leaf": hex::encode(leaves[index]),
        "index": index,
        "size": leaves.len(),
        "path": path,
        "root": view.root,
        "closed": view.closed,
        "gateway_key": view.gateway_key,
        "signature": view.signature,
        "epoch_seconds": view.epoch_seconds,
    });
    Some(json(&body))
}
