//! Vendor media types (`application/vnd.abiquo.<entity>+json; version=X.Y`).

pub const VIRTUAL_MACHINE: &str = "virtualmachine";
pub const VIRTUAL_MACHINES: &str = "virtualmachines";
pub const VIRTUAL_MACHINE_STATE: &str = "virtualmachinestate";
pub const ACCEPTED_REQUEST: &str = "acceptedrequest";
pub const TASK: &str = "task";
pub const TASKS: &str = "tasks";
pub const ERRORS: &str = "errors";
pub const USER: &str = "user";
pub const VIRTUAL_DATACENTERS: &str = "virtualdatacenters";
pub const VIRTUAL_APPLIANCES: &str = "virtualappliances";

/// The API version powerbook speaks when neither flag nor runbook pins one.
pub const DEFAULT_VERSION: &str = "5.0";

/// `application/vnd.abiquo.<entity>+json; version=<version>`.
pub fn vendor(entity: &str, version: &str) -> String {
    format!("application/vnd.abiquo.{entity}+json; version={version}")
}

/// `application/vnd.abiquo.<entity>+json` without a version (link `type` attributes).
pub fn unversioned(entity: &str) -> String {
    format!("application/vnd.abiquo.{entity}+json")
}

/// A parsed vendor media type: entity, format suffix and optional version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorType {
    pub entity: String,
    pub format: String,
    pub version: Option<String>,
}

/// Parses `application/vnd.abiquo.X+json; version=5.0` (spaces around `;` optional,
/// `version=` may also be quoted). Returns `None` for anything that is not a vendor type.
pub fn parse_vendor(value: &str) -> Option<VendorType> {
    let mut parts = value.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let rest = essence.strip_prefix("application/vnd.abiquo.")?;
    let (entity, format) = match rest.split_once('+') {
        Some((e, f)) => (e.to_owned(), f.to_owned()),
        None => (rest.to_owned(), "json".to_owned()),
    };
    let version = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("version")).then(|| v.trim().trim_matches('"').to_owned())
    });
    Some(VendorType {
        entity,
        format,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vendor_type_with_and_without_spaces() {
        let a = parse_vendor("application/vnd.abiquo.acceptedrequest+json; version=5.0");
        let b = parse_vendor("application/vnd.abiquo.acceptedrequest+json;version=5.0");
        assert_eq!(a, b);
        assert_eq!(a.and_then(|t| t.version).as_deref(), Some("5.0"));
    }

    #[test]
    fn missing_version_and_non_vendor_types() {
        let t = parse_vendor("application/vnd.abiquo.task+json");
        assert_eq!(
            t.map(|t| (t.entity, t.version)),
            Some(("task".into(), None))
        );
        assert_eq!(parse_vendor("application/json"), None);
    }
}
