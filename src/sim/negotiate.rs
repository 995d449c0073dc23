//! Media-type and version negotiation on `Accept` and `Content-Type`, as the API's version
//! filter does it: unknown version → 406 (Accept) / 415 (Content-Type); no version → latest.

use super::error::ApiError;
use crate::abiquo::codes::Code;
use crate::abiquo::media;
use axum::http::{HeaderMap, header};

/// The entity and version an answer will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub entity: String,
    pub version: String,
}

fn is_generic_json(essence: &str) -> bool {
    matches!(
        essence,
        "*/*" | "application/*" | "application/json" | "text/json" | "*"
    )
}

/// Picks the answer's media type from `Accept`. `allowed[0]` is the default entity when the
/// client sends no Accept or a generic JSON one.
pub(crate) fn accept(
    headers: &HeaderMap,
    allowed: &[&str],
    versions: &[String],
) -> Result<Negotiated, ApiError> {
    let latest = versions
        .last()
        .map_or(media::DEFAULT_VERSION, String::as_str);
    let default = Negotiated {
        entity: allowed.first().copied().unwrap_or("").to_owned(),
        version: latest.to_owned(),
    };
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Ok(default);
    }
    let mut error = None;
    for value in values {
        let essence = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if is_generic_json(&essence) {
            return Ok(default);
        }
        let Some(vendor) = media::parse_vendor(value) else {
            continue;
        };
        if vendor.format != "json" || !allowed.contains(&vendor.entity.as_str()) {
            error.get_or_insert_with(|| {
                ApiError::detailed(
                    Code::NotAcceptable,
                    &format!(
                        "The resource cannot produce '{value}'; it answers {}",
                        allowed
                            .iter()
                            .map(|e| media::unversioned(e))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            });
            continue;
        }
        match vendor.version {
            None => {
                return Ok(Negotiated {
                    entity: vendor.entity,
                    version: latest.to_owned(),
                });
            }
            Some(v) if versions.contains(&v) => {
                return Ok(Negotiated {
                    entity: vendor.entity,
                    version: v,
                });
            }
            Some(_) => {
                error = Some(ApiError::from(Code::NotAcceptable));
            }
        }
    }
    Err(error.unwrap_or_else(|| {
        ApiError::detailed(
            Code::NotAcceptable,
            "The 'Accept' header names no media type this resource produces",
        )
    }))
}

/// Checks a request body's `Content-Type`: the vendor `entity` (any accepted version, or
/// none = latest) or plain `application/json`. `required` = a missing header is refused.
pub(crate) fn content_type(
    headers: &HeaderMap,
    entity: &str,
    versions: &[String],
    required: bool,
) -> Result<(), ApiError> {
    let unsupported = |message: &str| ApiError::detailed(Code::UnsupportedMediaType, message);
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return if required {
            Err(unsupported(&format!(
                "A body of type {} is required",
                media::unversioned(entity)
            )))
        } else {
            Ok(())
        };
    };
    let value = value.to_str().unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" {
        return Ok(());
    }
    match media::parse_vendor(value) {
        Some(v) if v.entity == entity && v.format == "json" => match v.version {
            Some(ver) if !versions.contains(&ver) => {
                Err(ApiError::from(Code::UnsupportedMediaTypeVersion))
            }
            _ => Ok(()),
        },
        _ if !required && essence == "text/plain" => Ok(()),
        _ => Err(unsupported(&format!(
            "Unsupported 'Content-type' '{value}'; expected {}",
            media::unversioned(entity)
        ))),
    }
}

/// The version an error answer should carry: the first accepted version the client asked
/// for, else the latest.
pub(crate) fn error_version(headers: &HeaderMap, versions: &[String]) -> String {
    let latest = versions
        .last()
        .map_or(media::DEFAULT_VERSION, String::as_str);
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(media::parse_vendor)
        .filter_map(|v| v.version)
        .find(|v| versions.iter().any(|a| a == v))
        .unwrap_or_else(|| latest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn versions() -> Vec<String> {
        vec!["3.10".into(), "5.0".into(), "6.1".into()]
    }

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn missing_accept_or_version_means_latest() {
        let n = accept(&HeaderMap::new(), &["task"], &versions()).unwrap();
        assert_eq!((n.entity.as_str(), n.version.as_str()), ("task", "6.1"));
        let h = headers(header::ACCEPT, "application/vnd.abiquo.task+json");
        assert_eq!(accept(&h, &["task"], &versions()).unwrap().version, "6.1");
    }

    #[test]
    fn pinned_version_is_kept_and_3_10_is_not_3_1() {
        let h = headers(
            header::ACCEPT,
            "application/vnd.abiquo.task+json;version=3.10",
        );
        assert_eq!(accept(&h, &["task"], &versions()).unwrap().version, "3.10");
        let h = headers(
            header::ACCEPT,
            "application/vnd.abiquo.task+json; version=3.1",
        );
        let e = accept(&h, &["task"], &versions()).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (406, "406-NOT-ACCEPTABLE")
        );
    }

    #[test]
    fn wrong_entity_or_xml_is_not_acceptable_but_a_later_alternative_wins() {
        let h = headers(header::ACCEPT, "application/vnd.abiquo.virtualmachine+json");
        assert!(accept(&h, &["task"], &versions()).is_err());
        let h = headers(header::ACCEPT, "application/vnd.abiquo.task+xml");
        assert!(accept(&h, &["task"], &versions()).is_err());
        let h = headers(
            header::ACCEPT,
            "application/vnd.abiquo.task+xml, application/vnd.abiquo.taskextended+json; version=5.0",
        );
        let n = accept(&h, &["task", "taskextended"], &versions()).unwrap();
        assert_eq!(
            (n.entity.as_str(), n.version.as_str()),
            ("taskextended", "5.0")
        );
        let h = headers(header::ACCEPT, "text/json,application/json");
        assert!(accept(&h, &["task"], &versions()).is_ok());
    }

    #[test]
    fn content_type_version_and_entity_checks() {
        let vs = versions();
        let ok = headers(
            header::CONTENT_TYPE,
            "application/vnd.abiquo.virtualmachinestate+json; version=5.0",
        );
        assert!(content_type(&ok, "virtualmachinestate", &vs, true).is_ok());
        let bad_version = headers(
            header::CONTENT_TYPE,
            "application/vnd.abiquo.virtualmachinestate+json; version=9.9",
        );
        let e = content_type(&bad_version, "virtualmachinestate", &vs, true).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (415, "415-UNSUPPORTED-MEDIA-TYPE-VERSION")
        );
        let wrong = headers(header::CONTENT_TYPE, "application/vnd.abiquo.task+json");
        assert_eq!(
            content_type(&wrong, "virtualmachinestate", &vs, true)
                .unwrap_err()
                .status
                .as_u16(),
            415
        );
        assert!(content_type(&HeaderMap::new(), "virtualmachinestate", &vs, true).is_err());
        assert!(content_type(&HeaderMap::new(), "virtualmachinestate", &vs, false).is_ok());
    }
}
