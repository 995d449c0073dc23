//! Listing collections: the first page, then the rest. When the first page says how many
//! elements there are (`totalSize`) and its `next` link pages by `startwith`, the remaining
//! pages are read a few at a time from that link's own URL with the offset changed, instead
//! of one round trip after another; otherwise the `next` links are followed in turn.

use super::decode;
use super::{Client, link_href};
use crate::abiquo::error::ClientError;
use crate::abiquo::media;
use crate::abiquo::model::{
    Collection, ListedVm, Names, VirtualAppliance, VirtualDatacenter, VirtualMachine, VmSeen,
    VmState, find_link,
};
use crate::abiquo::so_far::ListingSoFar;
use futures::{StreamExt, TryStreamExt};
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// Longest paging chain we follow before calling the listing broken.
const MAX_PAGES: usize = 100_000;
/// Pages read at once (the run-wide rate limit still applies to each).
pub(crate) const PARALLEL_PAGES: usize = 16;

impl Client {
    /// Every VM the user can see, via `/cloud/virtualmachines`, each kept as what
    /// selecting and acting use as its page arrives (a real VM carries dozens of links).
    pub async fn list_vms(&self) -> Result<Vec<ListedVm>, ClientError> {
        // The same pass, with nobody reading it as it grows.
        self.list_vms_feeding(&ListingSoFar::default()).await
    }

    /// Where every VM is: its link, state and `deallocated` flag, and nothing else held.
    pub async fn list_vm_states(&self) -> Result<Vec<VmSeen>, ClientError> {
        let first = self.first_vm_page();
        let seen = self
            .list_all_map(&first, media::VIRTUAL_MACHINES, |vm: VirtualMachine| {
                VmSeen::of(&vm)
            })
            .await?;
        Ok(seen.into_iter().flatten().collect())
    }

    /// [`Self::list_vm_states`] of the `limit` VMs from `startwith` on in that listing (at
    /// most a page).
    pub async fn list_vm_states_range(
        &self,
        startwith: usize,
        limit: usize,
    ) -> Result<Vec<VmSeen>, ClientError> {
        let limit = limit.clamp(1, self.inner.page_size);
        let url = self.vm_page(startwith, limit);
        let accept = self.media(media::VIRTUAL_MACHINES);
        let answer = self.get_with_retries(&url, &accept).await?;
        let page: LeanPage<'_> = decode(&answer.body, &format!("GET {url}"))?;
        Ok(page
            .collection
            .into_iter()
            .filter_map(|vm| {
                let edit = vm.links.iter().find(|l| l.rel == "edit")?;
                Some(VmSeen {
                    href: edit.href.to_string(),
                    state: vm.state,
                    deallocated: vm.deallocated,
                })
            })
            .collect())
    }

    /// Every VDC the user can see, via `/cloud/virtualdatacenters`.
    pub async fn list_vdcs(&self) -> Result<Vec<VirtualDatacenter>, ClientError> {
        let first = self.first_page(&format!("{}/cloud/virtualdatacenters", self.inner.endpoint));
        self.list_all(&first, media::VIRTUAL_DATACENTERS).await
    }

    /// The vApps of a VDC (empty ones too), through its `virtualappliances` link.
    pub async fn list_vapps(
        &self,
        vdc: &VirtualDatacenter,
    ) -> Result<Vec<VirtualAppliance>, ClientError> {
        let href = link_href(
            find_link(&vdc.links, "virtualappliances"),
            "virtualappliances",
            || format!("VDC {}", vdc.name),
        )?;
        self.list_all(&self.first_page(&href), media::VIRTUAL_APPLIANCES)
            .await
    }

    /// The first page of a collection at `href`, by name (a stable order).
    fn first_page(&self, href: &str) -> String {
        page_at(href, 0, self.inner.page_size)
    }

    /// The first page of `/cloud/virtualmachines`, in a stable order.
    fn first_vm_page(&self) -> String {
        self.vm_page(0, self.inner.page_size)
    }

    /// `limit` VMs from `startwith` on of `/cloud/virtualmachines`, in that same order.
    fn vm_page(&self, startwith: usize, limit: usize) -> String {
        let href = format!("{}/cloud/virtualmachines", self.inner.endpoint);
        page_at(&href, startwith, limit)
    }

    /// Every element of a collection, from its first page at `first`. When the first page
    /// says how many there are (`totalSize`) and a different number arrived, the collection
    /// changed while we read it or the server pages wrongly: read it once more, then refuse
    /// rather than act on a partial list.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        first: &str,
        entity: &str,
    ) -> Result<Vec<T>, ClientError> {
        self.list_all_map(first, entity, |item: T| item).await
    }

    /// [`Self::list_all`], passing each element through `map` as its page arrives, so only
    /// what `map` keeps is held.
    pub async fn list_all_map<T: DeserializeOwned, U>(
        &self,
        first: &str,
        entity: &str,
        map: impl Fn(T) -> U + Copy,
    ) -> Result<Vec<U>, ClientError> {
        self.list_checked(first, entity, map, false).await
    }

    /// Reads the collection until a pass agrees with its `totalSize` (`again`: a pass
    /// already did not, so this is the last try).
    async fn list_checked<T: DeserializeOwned, U>(
        &self,
        first: &str,
        entity: &str,
        map: impl Fn(T) -> U + Copy,
        mut again: bool,
    ) -> Result<Vec<U>, ClientError> {
        loop {
            let mut items = Vec::new();
            let total = self.list_pages(first, entity, map, &mut items).await?;
            match incomplete(total, items.len()) {
                Some(total) => {
                    if again {
                        return Err(ClientError::Decode {
                            context: format!("listing {entity}"),
                            detail: format!(
                                "the API said totalSize {total} but sent {} (read twice); the \
                                 listing is incomplete or its paging is broken",
                                items.len()
                            ),
                        });
                    }
                    warn_reading_again(entity, total, items.len());
                    again = true;
                }
                None => return Ok(items),
            }
        }
    }

    /// [`Self::list_vms`], appending each page to `so_far` as it arrives, so a reader can
    /// start on the first VMs while the last are still listed. `so_far` is ended when the
    /// pass is (a reader gets no more from it); the whole listing is returned. When that
    /// pass disagrees with its `totalSize`, the listing is read again on its own: what
    /// `so_far` handed out is then only a prefix of an older listing.
    pub async fn list_vms_feeding(
        &self,
        so_far: &ListingSoFar<ListedVm>,
    ) -> Result<Vec<ListedVm>, ClientError> {
        let first = self.first_vm_page();
        let names = Mutex::new(Names::default());
        let names = &names;
        let map = |vm: VirtualMachine| {
            ListedVm::of(
                &vm,
                &mut names.lock().unwrap_or_else(PoisonError::into_inner),
            )
        };
        let mut sink = so_far;
        let pass = self
            .list_pages(&first, media::VIRTUAL_MACHINES, map, &mut sink)
            .await;
        let items = so_far.end();
        let Some(total) = incomplete(pass?, items.len()) else {
            return Ok(items);
        };
        warn_reading_again(media::VIRTUAL_MACHINES, total, items.len());
        drop(items);
        self.list_checked(&first, media::VIRTUAL_MACHINES, map, true)
            .await
    }

    /// One pass over the pages into `out`; the first page's `totalSize`.
    async fn list_pages<T: DeserializeOwned, U>(
        &self,
        first: &str,
        entity: &str,
        map: impl Fn(T) -> U + Copy,
        out: &mut impl PageSink<U>,
    ) -> Result<Option<u64>, ClientError> {
        let accept = self.media(entity);
        let page: Collection<T> = self
            .get_json(first, &accept, &format!("GET {first}"))
            .await?;
        let total = page.total_size;
        let size = page.collection.len();
        let next = page.next_href().map(str::to_owned);
        take_page(out, page.collection, map);
        let Some(next) = next else {
            return Ok(total);
        };
        if let Some(urls) = total.and_then(|t| offset_pages(&next, size, t)) {
            out.reserve(
                usize::try_from(total.unwrap_or(0))
                    .unwrap_or(0)
                    .min(1 << 20),
            );
            futures::stream::iter(urls)
                .map(|url| {
                    let accept = accept.clone();
                    async move {
                        let context = format!("GET {url}");
                        self.get_json::<Collection<T>>(&url, &accept, &context)
                            .await
                    }
                })
                .buffered(PARALLEL_PAGES)
                .try_for_each(|page| {
                    take_page(out, page.collection, map);
                    futures::future::ready(Ok(()))
                })
                .await?;
            return Ok(total);
        }
        self.follow_next(first, next, &accept, entity, out, map)
            .await?;
        Ok(total)
    }

    /// Follows `next` links one after the other, from `next` on.
    async fn follow_next<T: DeserializeOwned, U>(
        &self,
        first: &str,
        next: String,
        accept: &str,
        entity: &str,
        out: &mut impl PageSink<U>,
        map: impl Fn(T) -> U + Copy,
    ) -> Result<(), ClientError> {
        let mut seen = HashSet::from([first.to_owned()]);
        let mut next = Some(next);
        while let Some(url) = next.take() {
            if !seen.insert(url.clone()) || seen.len() > MAX_PAGES {
                return Err(ClientError::Decode {
                    context: format!("listing {entity}"),
                    detail: format!("the `next` links loop (back to {url})"),
                });
            }
            let page: Collection<T> = self.get_json(&url, accept, &format!("GET {url}")).await?;
            let empty = page.collection.is_empty();
            next = page.next_href().map(str::to_owned);
            take_page(out, page.collection, map);
            if empty {
                // A `next` link after an empty page would loop forever on a broken server.
                break;
            }
        }
        Ok(())
    }
}

/// A page of VMs as a look reads it: each VM's state, `deallocated` flag and links' rel and
/// href, borrowed from the answer. A VM carries dozens of links and fields; parsed whole,
/// pages of them were most of what a run of thousands of VMs spent its CPU on.
#[derive(Deserialize)]
struct LeanPage<'a> {
    #[serde(default, borrow)]
    collection: Vec<LeanVm<'a>>,
}

#[derive(Deserialize)]
struct LeanVm<'a> {
    state: VmState,
    #[serde(default)]
    deallocated: Option<bool>,
    #[serde(default, borrow)]
    links: Vec<LeanLink<'a>>,
}

#[derive(Deserialize)]
struct LeanLink<'a> {
    #[serde(borrow)]
    rel: Cow<'a, str>,
    #[serde(borrow)]
    href: Cow<'a, str>,
}

/// `limit` elements from `startwith` on of the collection at `href`, by name.
fn page_at(href: &str, startwith: usize, limit: usize) -> String {
    let join = if href.contains('?') { '&' } else { '?' };
    format!("{href}{join}startwith={startwith}&limit={limit}&by=name&asc=true")
}

fn take_page<T, U>(out: &mut impl PageSink<U>, page: Vec<T>, map: impl Fn(T) -> U) {
    out.take(page.into_iter().map(map));
}

/// `Some(total)` when a pass brought other than the `totalSize` its first page announced.
fn incomplete(total: Option<u64>, arrived: usize) -> Option<u64> {
    total.filter(|&t| usize::try_from(t).ok() != Some(arrived))
}

fn warn_reading_again(entity: &str, total: u64, arrived: usize) {
    tracing::warn!("listing {entity}: totalSize {total} but {arrived} arrived; reading it again");
}

/// Where a pass's elements go as their pages arrive, in listing order.
trait PageSink<U> {
    fn reserve(&mut self, additional: usize);
    fn take(&mut self, page: impl Iterator<Item = U>);
}

impl<U> PageSink<U> for Vec<U> {
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }

    fn take(&mut self, page: impl Iterator<Item = U>) {
        self.extend(page);
    }
}

/// A listing others read as it grows: each page is appended whole, in order.
impl<U: Clone> PageSink<U> for &ListingSoFar<U> {
    fn reserve(&mut self, additional: usize) {
        ListingSoFar::reserve(self, additional);
    }

    fn take(&mut self, page: impl Iterator<Item = U>) {
        self.extend(page);
    }
}

/// The URLs of every page after the first, made from the `next` link by changing its
/// `startwith`: only when that link pages by `startwith` and `limit`, its offset is where
/// the first page ended, and the page count is sane. `None` = follow the links instead.
fn offset_pages(next: &str, first_len: usize, total: u64) -> Option<Vec<String>> {
    let url = Url::parse(next).ok()?;
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let start = param("startwith")?;
    let limit = param("limit")?;
    let first_len = u64::try_from(first_len).ok()?;
    if limit == 0 || start != first_len || first_len != limit || total <= start {
        return None;
    }
    let pages = (total - start).div_ceil(limit);
    if pages > MAX_PAGES as u64 {
        return None;
    }
    let urls = (0..pages)
        .map(|k| {
            let mut page = url.clone();
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k2, v)| {
                    let v = if k2 == "startwith" {
                        (start + k * limit).to_string()
                    } else {
                        v.into_owned()
                    };
                    (k2.into_owned(), v)
                })
                .collect();
            page.query_pairs_mut().clear().extend_pairs(pairs);
            page.to_string()
        })
        .collect();
    Some(urls)
}

#[cfg(test)]
mod tests {
    use super::offset_pages;

    #[test]
    fn pages_after_the_first_change_only_the_offset_of_the_next_link() {
        let next = "https://c.example.com/api/cloud/virtualmachines?startwith=100&limit=100&by=name&asc=true";
        let urls = offset_pages(next, 100, 250).unwrap();
        assert_eq!(
            urls,
            [
                "https://c.example.com/api/cloud/virtualmachines?startwith=100&limit=100&by=name&asc=true",
                "https://c.example.com/api/cloud/virtualmachines?startwith=200&limit=100&by=name&asc=true",
            ]
        );
    }

    #[test]
    fn links_that_do_not_page_by_offset_are_followed_instead() {
        let odd = "https://c.example.com/api/cloud/virtualmachines?cursor=abc";
        assert!(offset_pages(odd, 100, 250).is_none());
        // The next page does not start where the first one ended.
        let skew = "https://c.example.com/api/cloud/virtualmachines?startwith=50&limit=100";
        assert!(offset_pages(skew, 100, 250).is_none());
        // A short first page: the server pages differently than it says.
        let short = "https://c.example.com/api/cloud/virtualmachines?startwith=100&limit=100";
        assert!(offset_pages(short, 40, 250).is_none());
    }
}
