//! Request parameters shared by the handlers, and their schemas in the OpenAPI document: the
//! naming rules of `drover_model::names` (patterns, lengths) and the bounds the handlers enforce,
//! written once from the same constants the checks use.

use drover_model::names::{MAX_APP_NAME, MAX_DEVICE_NAME, MAX_USER_NAME};
use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Object, Required};
use utoipa::IntoParams;

/// Application names: lowercase DNS labels (`drover_model::names::validate_app_name`).
pub const APP_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// User names: letters, digits, `.`, `_`, `@` and `-` (`validate_user_name`).
pub const USER_NAME_PATTERN: &str = "^[A-Za-z0-9._@-]+$";
/// Largest `limit` and `offset` of a list (larger numbers: 400).
pub const MAX_PAGE: u32 = u32::MAX;

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// The schema of an application name.
pub fn app_name() -> Object {
    string()
        .pattern(Some(APP_NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_APP_NAME))
        .build()
}

/// The schema of a device name: 1 to 255 bytes of UTF-8 (the length in characters is at most
/// that, fewer for non-ASCII names).
pub fn device_name() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(MAX_DEVICE_NAME))
        .description(Some(format!(
            "Any text of 1 to {MAX_DEVICE_NAME} bytes (UTF-8)"
        )))
        .build()
}

/// The schema of a user name.
pub fn user_name() -> Object {
    string()
        .pattern(Some(USER_NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_USER_NAME))
        .build()
}

/// The schema of `limit` and `offset`.
pub fn page_bound() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(MAX_PAGE as usize))
        .build()
}

pub(crate) fn path_param(name: &str, description: &str, schema: Object) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// A query parameter. (utoipa's `IntoParams` derive drops the description and `required` of a
/// field with `schema_with`, hence the parameter structs with such fields implement it by hand.)
pub fn query_param(name: &str, description: &str, required: bool, schema: Object) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The characters of a label selector (its grammar is in the parameter's description).
pub const SELECTOR_PATTERN: &str = "^[A-Za-z0-9._/:=!,() -]*$";

/// `labels`, `limit` and `offset` of a list.
pub fn list_params() -> Vec<Parameter> {
    let labels = query_param(
        "labels",
        "Label selector: comma-separated requirements that must all hold: `k=v` (also `k==v`), \
         `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (has the label), `!k` (lacks it). Keys are \
         1 to 253 characters of letters, digits, `.`, `_`, `-` and `/`; values up to 255 of \
         those and `:`. Anything else: 400.",
        false,
        string()
            .pattern(Some(SELECTOR_PATTERN))
            .examples(["env=prod,tier in (a,b),!legacy"])
            .build(),
    );
    let mut params = vec![labels];
    params.extend(page_params());
    params
}

/// `limit` and `offset` of a list.
pub fn page_params() -> [Parameter; 2] {
    [
        query_param(
            "limit",
            "Maximum number of items to return (none: all)",
            false,
            page_bound(),
        ),
        query_param("offset", "Number of items to skip", false, page_bound()),
    ]
}

pub(crate) fn app_param() -> Parameter {
    path_param("app", "The application's name", app_name())
}

/// `{app}`.
#[derive(Debug, Deserialize)]
pub struct AppPath {
    pub app: String,
}

impl IntoParams for AppPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![app_param()]
    }
}

/// `{app}/…/{device}`.
#[derive(Debug, Deserialize)]
pub struct DevicePath {
    pub app: String,
    pub device: String,
}

impl IntoParams for DevicePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            app_param(),
            path_param("device", "The device's name", device_name()),
        ]
    }
}

/// `{app}/webhooks/{webhook}`.
#[derive(Debug, Deserialize)]
pub struct WebhookPath {
    pub app: String,
    pub webhook: String,
}

impl IntoParams for WebhookPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            app_param(),
            path_param("webhook", "The webhook subscription's name", app_name()),
        ]
    }
}

/// `{app}/{channel}` of the WebSocket integration.
#[derive(Debug, Deserialize)]
pub struct ChannelPath {
    pub app: String,
    pub channel: String,
}

impl IntoParams for ChannelPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            app_param(),
            path_param(
                "channel",
                "Only events of this channel",
                string().min_length(Some(1)).build(),
            ),
        ]
    }
}

/// `/users/{name}`.
#[derive(Debug, Deserialize)]
pub struct UserPath {
    pub name: String,
}

impl IntoParams for UserPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param("name", "The user's name", user_name())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_model::names::{validate_app_name, validate_user_name};
    use proptest::prelude::*;

    /// Names matching a documented pattern (up to the documented length) are valid names.
    fn admits_only_valid(pattern: &str, max: usize, valid: fn(&str) -> bool) {
        // The generator takes no anchors; the pattern is anchored at both ends.
        let unanchored = pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .expect("anchored pattern");
        let names = proptest::string::string_regex(unanchored).expect("pattern parses");
        proptest!(|(name in names)| {
            prop_assume!(name.len() <= max);
            prop_assert!(valid(&name), "{name:?} matches {pattern} but is refused");
        });
    }

    #[test]
    fn app_name_pattern_admits_only_valid_names() {
        admits_only_valid(APP_NAME_PATTERN, MAX_APP_NAME, |n| {
            validate_app_name(n).is_ok()
        });
    }

    #[test]
    fn user_name_pattern_admits_only_valid_names() {
        admits_only_valid(USER_NAME_PATTERN, MAX_USER_NAME, |n| {
            validate_user_name(n).is_ok()
        });
    }
}
