//! Incremental reads: search on a modification-time window sorted by `hs_object_id`, paged by
//! 200 by keyset on the last id (so HubSpot's 10,000-result cap is never reached); archived
//! records through the list endpoint.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;

use super::client::{HubSpotClient, expect_ok};
use super::error::HubSpotError;
use super::limiter::Lane;
use super::types::{Page, Record};

/// Largest search page HubSpot serves.
pub const SEARCH_PAGE: usize = 200;
/// Largest list page.
pub const LIST_PAGE: usize = 100;

/// Which records a modified-since search returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ModifiedSince {
    /// Records modified at or after this instant (hold it a little behind "now" for index lag).
    pub since: DateTime<Utc>,
    /// Optional upper bound (inclusive), e.g. the start of this sync pass.
    pub until: Option<DateTime<Utc>>,
    /// Properties to return.
    pub properties: Vec<String>,
}

/// The modified-date property of an object type: contacts differ from the rest.
pub fn modified_property(object: &str) -> &'static str {
    if matches!(object, "contacts" | "0-1") {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

/// Pages through a modified-since search by keyset: every request asks for the records above
/// the last id returned (`hs_object_id GT last`), sorted by id, so no query ever nears the
/// 10,000-result cap and a record that leaves the result set meanwhile (modified again, past
/// `until`) cannot shift an offset and hide another one.
pub struct SearchPager<'c> {
    client: &'c HubSpotClient,
    object: String,
    query: ModifiedSince,
    /// Only records with a higher id are still to come.
    after_id: u64,
    done: bool,
    /// Search requests made so far.
    pub requests: u64,
}

impl<'c> SearchPager<'c> {
    /// The next page of records (ascending id), or `None` when all were returned.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Record>>, HubSpotError> {
        if self.done {
            return Ok(None);
        }
        let modified = modified_property(&self.object);
        let mut filters = vec![
            json!({"propertyName": modified, "operator": "GTE",
                   "value": self.query.since.timestamp_millis().to_string()}),
            json!({"propertyName": "hs_object_id", "operator": "GT",
                   "value": self.after_id.to_string()}),
        ];
        if let Some(until) = self.query.until {
            filters.push(json!({"propertyName": modified, "operator": "LTE",
                                "value": until.timestamp_millis().to_string()}));
        }
        let body = json!({
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": self.query.properties,
            "limit": SEARCH_PAGE,
        });
        let what = format!("search of {}", self.object);
        let path = self.client.paths().search(&self.object)?;
        let answer = self
            .client
            .call(&what, Lane::Search, Method::POST, &path, &[], Some(&body))
            .await?;
        self.requests += 1;
        let page: Page = expect_ok(&what, &answer)?;
        let mut last = self.after_id;
        for record in &page.results {
            let id: u64 = record.id.parse().map_err(|_| HubSpotError::Protocol {
                what: what.clone(),
                status: answer.status,
                detail: format!("record id `{}` is not numeric", record.id),
            })?;
            last = last.max(id);
        }
        // More pages only while HubSpot says so and the position moved (a page of ids at or
        // below the position would repeat forever).
        self.done = page.next_after().is_none() || last == self.after_id;
        self.after_id = last;
        Ok(Some(page.results))
    }

    /// Starts (or resumes) after record `id`: only records with a higher id are returned.
    pub fn after_id(mut self, id: u64) -> Self {
        self.after_id = id;
        self
    }

    /// The highest record id returned so far (where a resumed pass goes on from).
    pub fn position(&self) -> u64 {
        self.after_id
    }

    /// Every remaining record.
    pub async fn collect(mut self) -> Result<Vec<Record>, HubSpotError> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

impl HubSpotClient {
    /// A pager over the records of `object` modified since `query.since`.
    pub fn search_modified(&self, object: &str, query: ModifiedSince) -> SearchPager<'_> {
        SearchPager {
            client: self,
            object: object.to_owned(),
            query,
            after_id: 0,
            done: false,
            requests: 0,
        }
    }

    /// One page of archived records; pass the returned cursor to get the next.
    pub async fn list_archived_page(
        &self,
        object: &str,
        properties: &[&str],
        after: Option<&str>,
    ) -> Result<(Vec<Record>, Option<String>), HubSpotError> {
        self.list_page(object, properties, after, true).await
    }

    /// One page of the list endpoint (records in id order, live or archived ones); pass the
    /// returned cursor to get the next.
    pub async fn list_page(
        &self,
        object: &str,
        properties: &[&str],
        after: Option<&str>,
        archived: bool,
    ) -> Result<(Vec<Record>, Option<String>), HubSpotError> {
        let path = self.paths().objects(object)?;
        let what = if archived {
            format!("list of archived {object}")
        } else {
            format!("list of {object}")
        };
        let mut query = vec![
            ("archived", archived.to_string()),
            ("limit", LIST_PAGE.to_string()),
        ];
        if !properties.is_empty() {
            query.push(("properties", properties.join(",")));
        }
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        let answer = self
            .call(&what, Lane::Standard, Method::GET, &path, &query, None)
            .await?;
        let page: Page = expect_ok(&what, &answer)?;
        let next = page.next_after();
        Ok((page.results, next))
    }

    /// Every archived record of `object`.
    pub async fn list_archived(
        &self,
        object: &str,
        properties: &[&str],
    ) -> Result<Vec<Record>, HubSpotError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (records, next) = self
                .list_archived_page(object, properties, after.as_deref())
                .await?;
            all.extend(records);
            match next {
                Some(next) if Some(&next) != after.as_ref() => after = Some(next),
                _ => return Ok(all),
            }
        }
    }
}
