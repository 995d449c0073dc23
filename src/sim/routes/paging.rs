//! Paging of listings: `startwith`, `limit`, `by`, `asc`, `has`, `vmlabel`, and the
//! `first` / `next` / `last` links of a page.

use crate::abiquo::codes::Code;
use crate::abiquo::model::Link;
use crate::sim::error::ApiError;
use crate::sim::shared::Shared;
use crate::sim::world::SortBy;
use axum::extract::Query;
use axum::response::Response;

/// Paging parameters of listings.
pub(super) struct Paging {
    pub(super) startwith: usize,
    /// 0 = everything.
    pub(super) limit: usize,
    pub(super) by: SortBy,
    pub(super) by_text: String,
    pub(super) asc: bool,
    pub(super) has: Option<String>,
    pub(super) vmlabel: Option<String>,
}

pub(super) fn bad_request(message: &str) -> ApiError {
    ApiError::detailed(Code::BadRequest, message)
}

impl Paging {
    fn parse(params: &[(String, String)]) -> Result<Paging, ApiError> {
        let mut p = Paging {
            startwith: 0,
            limit: 25,
            by: SortBy::Name,
            by_text: "name".to_owned(),
            asc: true,
            has: None,
            vmlabel: None,
        };
        for (k, v) in params {
            match k.as_str() {
                "startwith" => {
                    p.startwith = v.parse().map_err(|_| {
                        bad_request(&format!("startwith must be a number >= 0, not '{v}'"))
                    })?;
                }
                "limit" => {
                    p.limit = v.parse().map_err(|_| {
                        bad_request(&format!("limit must be a number >= 0, not '{v}'"))
                    })?;
                }
                "by" => {
                    p.by = SortBy::parse(v).ok_or_else(|| {
                        bad_request(&format!(
                            "Invalid 'by' parameter '{v}'; expected name, label, id or state"
                        ))
                    })?;
                    p.by_text = v.to_ascii_lowercase();
                }
                "asc" => {
                    p.asc = match v.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(bad_request(&format!(
                                "asc must be true or false, not '{v}'"
                            )));
                        }
                    };
                }
                "has" if !v.is_empty() => p.has = Some(v.clone()),
                "vmlabel" if !v.is_empty() => p.vmlabel = Some(v.clone()),
                _ => {}
            }
        }
        Ok(p)
    }

    /// The page's slice of `total` items and its `first`/`next`/`last` links.
    pub(super) fn page(&self, href: &str, total: usize) -> (std::ops::Range<usize>, Vec<Link>) {
        let start = self.startwith.min(total);
        let end = if self.limit == 0 {
            total
        } else {
            start.saturating_add(self.limit).min(total)
        };
        let mut extra = String::new();
        for (k, v) in [("has", &self.has), ("vmlabel", &self.vmlabel)] {
            if let Some(v) = v {
                extra.push_str(&format!("&{k}={}", percent_encode(v)));
            }
        }
        let tail = format!(
            "limit={}&by={}&asc={}{extra}",
            self.limit, self.by_text, self.asc
        );
        let at = |s: usize| format!("{href}?startwith={s}&{tail}");
        let mut links = vec![Link::new("first", format!("{href}?{tail}"))];
        if self.limit > 0 && end < total {
            links.push(Link::new("next", at(end)));
        }
        let last = if self.limit == 0 || total == 0 {
            0
        } else {
            (total - 1) / self.limit * self.limit
        };
        links.push(Link::new("last", at(last)));
        (start..end, links)
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) type Params =
    Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

pub(super) fn paging(shared: &Shared, params: Params, version: &str) -> Result<Paging, Response> {
    let params = params.map_err(|e| shared.api_error(&bad_request(&e.body_text()), version))?;
    Paging::parse(&params.0).map_err(|e| shared.api_error(&e, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paging(limit: usize, startwith: usize) -> Paging {
        Paging {
            startwith,
            limit,
            by: SortBy::Name,
            by_text: "name".into(),
            asc: true,
            has: Some("web api".into()),
            vmlabel: None,
        }
    }

    #[test]
    fn page_links_follow_the_reference_shape() {
        let (range, links) = paging(2, 0).page("http://h:1/api/x", 5);
        assert_eq!(range, 0..2);
        let hrefs: Vec<_> = links
            .iter()
            .map(|l| (l.rel.as_str(), l.href.as_str()))
            .collect();
        assert_eq!(
            hrefs,
            [
                (
                    "first",
                    "http://h:1/api/x?limit=2&by=name&asc=true&has=web%20api"
                ),
                (
                    "next",
                    "http://h:1/api/x?startwith=2&limit=2&by=name&asc=true&has=web%20api"
                ),
                (
                    "last",
                    "http://h:1/api/x?startwith=4&limit=2&by=name&asc=true&has=web%20api"
                ),
            ]
        );
        let (range, links) = paging(2, 4).page("u", 5);
        assert_eq!(range, 4..5);
        assert!(links.iter().all(|l| l.rel != "next"));
        let (range, _) = paging(0, 0).page("u", 5);
        assert_eq!(range, 0..5);
        let (range, _) = paging(25, 99).page("u", 5);
        assert_eq!(range, 5..5);
    }

    #[test]
    fn paging_parameters_are_validated() {
        let p = |k: &str, v: &str| Paging::parse(&[(k.to_owned(), v.to_owned())]);
        assert!(p("limit", "-1").is_err());
        assert!(p("by", "colour").is_err());
        assert!(p("asc", "maybe").is_err());
        assert!(p("startwith", "3").is_ok_and(|p| p.startwith == 3));
        assert!(p("asc", "false").is_ok_and(|p| !p.asc));
    }
}
