//! Listings and the VDC / vApp answers: which VMs a scope holds, filtered and sorted.

use super::World;
use crate::abiquo::media;
use crate::abiquo::model::{Link, VirtualAppliance, VirtualDatacenter, VmState};
use crate::sim::error::ApiError;

/// Which VMs a listing covers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    All,
    Vdc(u64),
    Vapp(u64, u64),
}

/// Sort key of a listing (`by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortBy {
    Name,
    Label,
    Id,
    State,
}

impl SortBy {
    pub fn parse(s: &str) -> Option<SortBy> {
        match s.to_ascii_lowercase().as_str() {
            "name" => Some(SortBy::Name),
            "label" => Some(SortBy::Label),
            "id" => Some(SortBy::Id),
            "state" => Some(SortBy::State),
            _ => None,
        }
    }
}

/// Filters and order of a listing (paging is applied by the caller).
pub(crate) struct ListFilter<'a> {
    pub has: Option<&'a str>,
    pub vmlabel: Option<&'a str>,
    pub by: SortBy,
    pub asc: bool,
}

impl World {
    /// VMs of a scope, filtered and sorted (paging is the caller's).
    pub fn list(
        &mut self,
        now: u64,
        scope: Scope,
        f: &ListFilter<'_>,
    ) -> Result<Vec<usize>, ApiError> {
        self.settle(now);
        let base: &[usize] = match scope {
            Scope::All => &self.vms_by_name,
            Scope::Vdc(vdc) => &self.vdcs[self.vdc(vdc)?].vms_by_name,
            Scope::Vapp(vdc, vapp) => &self.vapps[self.vapp(vdc, vapp)?].vms_by_name,
        };
        let has = f.has.map(str::to_lowercase);
        let vms = &self.vms;
        let mut out: Vec<usize> = if f.vmlabel.is_none() && has.is_none() {
            base.to_vec()
        } else {
            base.iter()
                .copied()
                .filter(|&i| {
                    let vm = &vms[i].info;
                    let label_ok = f.vmlabel.is_none_or(|l| vm.label.as_deref() == Some(l));
                    let has_ok = has.as_deref().is_none_or(|h| {
                        vm.name.to_lowercase().contains(h)
                            || vm
                                .label
                                .as_deref()
                                .is_some_and(|l| l.to_lowercase().contains(h))
                    });
                    label_ok && has_ok
                })
                .collect()
        };
        match f.by {
            SortBy::Name => {}
            SortBy::Label => out.sort_by(|a, b| {
                let (a, b) = (&vms[*a].info, &vms[*b].info);
                (a.label.as_deref(), &a.name).cmp(&(b.label.as_deref(), &b.name))
            }),
            SortBy::Id => out.sort_by_key(|i| vms[*i].info.id),
            SortBy::State => out.sort_by(|a, b| {
                (vms[*a].state.as_str(), &vms[*a].info.name)
                    .cmp(&(vms[*b].state.as_str(), &vms[*b].info.name))
            }),
        }
        if !f.asc {
            out.reverse();
        }
        Ok(out)
    }

    pub fn vdc_list(&self) -> Vec<usize> {
        let mut out: Vec<usize> = (0..self.vdcs.len()).collect();
        out.sort_by(|a, b| self.vdcs[*a].name.cmp(&self.vdcs[*b].name));
        out
    }

    pub fn vapp_list(&self, vdc_idx: usize) -> Vec<usize> {
        let mut out = self.vdcs[vdc_idx].vapps.clone();
        out.sort_by(|a, b| self.vapps[*a].name.cmp(&self.vapps[*b].name));
        out
    }

    fn vdc_href(&self, base: &str, vdc_idx: usize) -> String {
        format!("{base}/cloud/virtualdatacenters/{}", self.vdcs[vdc_idx].id)
    }

    fn vapp_href(&self, base: &str, vapp_idx: usize) -> String {
        let vapp = &self.vapps[vapp_idx];
        format!(
            "{}/virtualappliances/{}",
            self.vdc_href(base, vapp.vdc),
            vapp.id
        )
    }

    pub fn vdc_dto(&self, base: &str, vdc_idx: usize) -> VirtualDatacenter {
        let vdc = &self.vdcs[vdc_idx];
        let href = self.vdc_href(base, vdc_idx);
        VirtualDatacenter {
            id: vdc.id,
            name: vdc.name.clone(),
            hypervisor_type: Some(vdc.hypervisor.clone()),
            links: vec![
                Link::new("edit", href.clone()).typed(&media::unversioned("virtualdatacenter")),
                Link::new("virtualappliances", format!("{href}/virtualappliances"))
                    .typed(&media::unversioned(media::VIRTUAL_APPLIANCES)),
                Link::new("virtualmachines", format!("{href}/action/virtualmachines"))
                    .typed(&media::unversioned(media::VIRTUAL_MACHINES)),
                Link::new("enterprise", format!("{base}/admin/enterprises/1"))
                    .typed(&media::unversioned("enterprise"))
                    .titled("Abiquo"),
            ],
        }
    }

    pub fn vapp_dto(&self, base: &str, vapp_idx: usize) -> VirtualAppliance {
        let vapp = &self.vapps[vapp_idx];
        let href = self.vapp_href(base, vapp_idx);
        let state = if vapp.vms_by_name.is_empty() {
            "EMPTY"
        } else if vapp.vms_by_name.iter().all(|&i| {
            matches!(
                self.vms[i].state,
                VmState::NotAllocated | VmState::Allocated
            )
        }) {
            "NOT_DEPLOYED"
        } else {
            "DEPLOYED"
        };
        VirtualAppliance {
            id: vapp.id,
            name: vapp.name.clone(),
            state: Some(state.to_owned()),
            links: vec![
                Link::new("edit", href.clone()).typed(&media::unversioned("virtualappliance")),
                Link::new("virtualdatacenter", self.vdc_href(base, vapp.vdc))
                    .typed(&media::unversioned("virtualdatacenter"))
                    .titled(self.vdcs[vapp.vdc].name.clone()),
                Link::new("virtualmachines", format!("{href}/virtualmachines"))
                    .typed(&media::unversioned(media::VIRTUAL_MACHINES)),
            ],
        }
    }
}
