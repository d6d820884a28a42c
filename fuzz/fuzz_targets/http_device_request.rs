//! Everything the HTTP device endpoint reads of a request before acting: the query, the
//! channel, the `Authorization` header, the content type, and whether the payload fits the
//! declared content type.
#![no_main]

use arbitrary::Arbitrary;
use axum::http::{header, HeaderMap, HeaderValue};
use drover_endpoints::event::detect_content_type;
use drover_endpoints::http::request::{check_payload, PublishRequest, ReplyRequest};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    channel: String,
    query: Option<String>,
    authorization: Vec<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    certificate: Option<Vec<u8>>,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let mut headers = HeaderMap::new();
    for a in &input.authorization {
        if let Ok(v) = HeaderValue::from_bytes(a) {
            headers.append(header::AUTHORIZATION, v);
        }
    }
    if let Some(v) = input.content_type.as_deref().and_then(|c| HeaderValue::from_bytes(c).ok()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let chain = input.certificate.map(|c| vec![c]);
    if let Ok(r) = PublishRequest::parse(
        input.channel.clone(),
        input.query.as_deref(),
        &headers,
        chain.as_deref(),
    ) {
        assert_eq!(r.channel, input.channel);
        assert!(r.command_wait(60) <= 60);
        assert!(!r.channel.is_empty() && !r.channel.contains(['+', '#', '\0']));
        if check_payload(r.content_type.as_deref(), &input.body).is_ok() {
            let _ = detect_content_type(r.content_type.as_deref(), &input.body);
        }
    }
    if let Ok(r) = ReplyRequest::parse(input.query.as_deref(), &headers) {
        assert!((100..600).contains(&r.status));
    }
});
