//! Fetching and caching the issuer's signing keys (JWKS): discovery, refetches for unknown key
//! ids (rate-limited), refreshes of old keys, one fetch at a time.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::time::Instant;

use super::keys::{JwksDocument, KeySet};
use super::{Inner, OidcError, MAX_KEY_AGE};

/// The keys fetched last, and how the last attempts went.
#[derive(Default)]
pub(super) struct Cache {
    keys: Option<Arc<KeySet>>,
    /// Last successful fetch.
    fetched_at: Option<Instant>,
    /// Last fetch attempt, successful or not.
    attempted_at: Option<Instant>,
    /// Number of fetch attempts so far.
    generation: u64,
    /// Error of the last attempt, if it failed.
    last_error: Option<String>,
}

impl Inner {
    /// The cached keys, fetching them first if there are none yet or they are old.
    pub(super) async fn current_keys(&self) -> Result<Arc<KeySet>, OidcError> {
        let (generation, stale) = {
            let cache = self.cache.read().await;
            match (&cache.keys, cache.fetched_at) {
                (Some(keys), Some(at)) if at.elapsed() < MAX_KEY_AGE => return Ok(keys.clone()),
                _ => (cache.generation, cache.keys.clone()),
            }
        };
        match self.refresh(generation).await {
            Ok(keys) => Ok(keys),
            Err(err) => match stale {
                Some(keys) => {
                    tracing::warn!(issuer = %self.config.issuer_url, error = %err,
                        "cannot refresh OIDC signing keys, using the cached ones");
                    Ok(keys)
                }
                None => Err(err),
            },
        }
    }

    /// Refetches keys after a lookup in `seen` failed, unless that was done too recently.
    /// Returns `None` when rate limited.
    pub(super) async fn refetch_for_unknown_key(
        &self,
        seen: &Arc<KeySet>,
    ) -> Result<Option<Arc<KeySet>>, OidcError> {
        let generation = {
            let cache = self.cache.read().await;
            if let Some(keys) = &cache.keys {
                if !Arc::ptr_eq(keys, seen) {
                    // Someone else already refreshed them.
                    return Ok(Some(keys.clone()));
                }
            }
            if cache
                .attempted_at
                .is_some_and(|at| at.elapsed() < self.refetch_interval)
            {
                tracing::debug!(issuer = %self.config.issuer_url,
                    "unknown signing key, not refetching keys yet");
                return Ok(None);
            }
            cache.generation
        };
        self.refresh(generation).await.map(Some)
    }

    /// Fetches the key set, unless another task finished an attempt since `seen_generation`
    /// was read, in which case its outcome is reused.
    async fn refresh(&self, seen_generation: u64) -> Result<Arc<KeySet>, OidcError> {
        let mut jwks_uri = self.fetch.lock().await;
        {
            let cache = self.cache.read().await;
            if cache.generation != seen_generation {
                return match (&cache.last_error, &cache.keys) {
                    (None, Some(keys)) => Ok(keys.clone()),
                    (Some(err), _) => Err(OidcError::Unavailable(err.clone())),
                    (None, None) => Err(OidcError::Unavailable(
                        "signing keys are not available".to_string(),
                    )),
                };
            }
        }

        let result = self.fetch_keys(&mut jwks_uri).await;

        let now = Instant::now();
        let mut cache = self.cache.write().await;
        cache.generation += 1;
        cache.attempted_at = Some(now);
        match result {
            Ok(keys) => {
                let keys = Arc::new(keys);
                cache.keys = Some(keys.clone());
                cache.fetched_at = Some(now);
                cache.last_error = None;
                Ok(keys)
            }
            Err(err) => {
                if let OidcError::Unavailable(msg) = &err {
                    cache.last_error = Some(msg.clone());
                }
                Err(err)
            }
        }
    }

    async fn fetch_keys(&self, jwks_uri: &mut Option<String>) -> Result<KeySet, OidcError> {
        let uri = match (&self.config.jwks_url, &*jwks_uri) {
            (Some(configured), _) => configured.clone(),
            (None, Some(discovered)) => discovered.clone(),
            (None, None) => {
                let discovered = self.discover().await?;
                *jwks_uri = Some(discovered.clone());
                discovered
            }
        };
        tracing::debug!(issuer = %self.config.issuer_url, jwks_uri = %uri, "fetching OIDC signing keys");
        let jwks: JwksDocument = match self.get_json("key set", &uri).await {
            Ok(jwks) => jwks,
            Err(err) => {
                // The location may have changed: discover again next time.
                *jwks_uri = None;
                return Err(err);
            }
        };
        let keys = KeySet::from_document(jwks);
        if keys.entries.is_empty() {
            return Err(OidcError::Unavailable(format!(
                "key set at {uri} contains no usable signing key"
            )));
        }
        Ok(keys)
    }

    async fn discover(&self) -> Result<String, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer_url.trim_end_matches('/')
        );
        let doc: DiscoveryDocument = self.get_json("discovery document", &url).await?;
        if let Some(issuer) = &doc.issuer {
            if issuer.trim_end_matches('/') != self.config.issuer_url.trim_end_matches('/') {
                tracing::warn!(configured = %self.config.issuer_url, advertised = %issuer,
                    "OIDC discovery document advertises a different issuer");
            }
        }
        doc.jwks_uri.ok_or_else(|| {
            OidcError::Unavailable(format!("discovery document at {url} has no 'jwks_uri'"))
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, what: &str, url: &str) -> Result<T, OidcError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                OidcError::Unavailable(format!(
                    "cannot fetch {what} from {url}: {}",
                    drover_model::error::chain(&e)
                ))
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(OidcError::Unavailable(format!(
                "fetching {what} from {url} failed with HTTP status {status}"
            )));
        }
        response.json::<T>().await.map_err(|e| {
            OidcError::Unavailable(format!(
                "invalid {what} at {url}: {}",
                drover_model::error::chain(&e)
            ))
        })
    }
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: Option<String>,
    jwks_uri: Option<String>,
}
