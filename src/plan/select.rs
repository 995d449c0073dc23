//! Client-side selector matching. The API offers no server-side filters beyond `vmlabel`, so
//! VMs are listed once and matched here: vdc/vapp from the VM's link titles and ids,
//! hypervisor from the `hypervisortype` link.

use crate::abiquo::model::ListedVm;
use crate::runbook::model::Selector;

/// All present fields must match (AND).
pub fn matches(selector: &Selector, vm: &ListedVm) -> bool {
    if let Some(vdc) = &selector.vdc
        && !vdc.matches(vm.vdc.id, vm.vdc.name.as_deref())
    {
        return false;
    }
    if let Some(vapp) = &selector.vapp
        && !vapp.matches(vm.vapp.id, vm.vapp.name.as_deref())
    {
        return false;
    }
    if let Some(p) = &selector.vm
        && !p.matches(&vm.name)
    {
        return false;
    }
    if let Some(p) = &selector.label
        && !vm.label.as_deref().is_some_and(|l| p.matches(l))
    {
        return false;
    }
    if let Some(s) = &selector.state
        && vm.state != *s
    {
        return false;
    }
    if let Some(h) = &selector.hypervisor
        && !vm
            .hypervisor
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case(h))
    {
        return false;
    }
    if let Some(href) = &selector.href
        && vm
            .href()
            .is_none_or(|own| normalize_href(own) != normalize_href(href))
    {
        return false;
    }
    true
}

/// Compares URLs the way the API means them: default ports and a trailing slash do not matter
/// (the API emits `https://host:443/api/...`).
pub fn normalize_href(href: &str) -> String {
    let href = href.trim().trim_end_matches('/');
    let (scheme, rest) = match href.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => return href.to_owned(),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = authority.to_ascii_lowercase();
    let authority = match scheme.as_str() {
        "https" => authority.strip_suffix(":443").unwrap_or(&authority),
        "http" => authority.strip_suffix(":80").unwrap_or(&authority),
        _ => &authority,
    };
    format!("{scheme}://{authority}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::{Link, VirtualMachine, VmState};
    use crate::runbook::model::{NameOrId, Pattern};

    /// Matches a VM document, as it comes listed.
    fn matches(selector: &Selector, vm: &VirtualMachine) -> bool {
        super::matches(selector, &ListedVm::from(vm))
    }

    fn vm() -> VirtualMachine {
        VirtualMachine {
            id: 7,
            uuid: None,
            name: "web-01".into(),
            label: Some("storefront web 1".into()),
            description: None,
            state: VmState::On,
            id_state: None,
            cpu: None,
            ram: None,
            protected: false,
            protected_cause: None,
            deallocated: None,
            links: vec![
                Link::new(
                    "edit",
                    "https://h:443/api/cloud/virtualdatacenters/1/virtualappliances/2/virtualmachines/7",
                ),
                Link::new(
                    "virtualdatacenter",
                    "https://h:443/api/cloud/virtualdatacenters/1",
                )
                .titled("prod"),
                Link::new(
                    "virtualappliance",
                    "https://h:443/api/cloud/virtualdatacenters/1/virtualappliances/2",
                )
                .titled("web-frontend"),
                Link::new(
                    "hypervisortype",
                    "https://h:443/api/config/hypervisortypes/KVM",
                )
                .titled("KVM"),
            ],
        }
    }

    fn pat(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    #[test]
    fn every_field_is_anded() {
        let vm = vm();
        let all = Selector {
            vdc: Some(NameOrId::Name(pat("prod"))),
            vapp: Some(NameOrId::Id(2)),
            vm: Some(pat("web-*")),
            label: Some(pat("storefront*")),
            state: Some(VmState::On),
            hypervisor: Some("kvm".into()),
            href: Some(
                "https://h/api/cloud/virtualdatacenters/1/virtualappliances/2/virtualmachines/7/"
                    .into(),
            ),
        };
        assert!(matches(&all, &vm));
        let mut s = all.clone();
        s.state = Some(VmState::Off);
        assert!(!matches(&s, &vm));
        let mut s = all.clone();
        s.vdc = Some(NameOrId::Id(9));
        assert!(!matches(&s, &vm));
        let mut s = all.clone();
        s.vapp = Some(NameOrId::Name(pat("db")));
        assert!(!matches(&s, &vm));
        let mut s = all.clone();
        s.hypervisor = Some("AZURE".into());
        assert!(!matches(&s, &vm));
        let mut s = all;
        s.label = Some(pat("postgres*"));
        assert!(!matches(&s, &vm));
        assert!(matches(&Selector::default(), &vm));
    }

    #[test]
    fn hrefs_compare_without_default_ports_or_trailing_slash() {
        assert_eq!(
            normalize_href("HTTPS://H:443/api/x/"),
            normalize_href("https://h/api/x")
        );
        assert_ne!(
            normalize_href("http://h:8080/api/x"),
            normalize_href("http://h/api/x")
        );
    }
}
