//! `GET /v1/kv?prefix=p&start=a&range_end=b&after=k&limit=100&keys_only=true
//! &count_only=true&consistency=...` → 200
//! `{"kvs": [KV...], "more": false, "revision": 14}`, plus `"next": KEY`
//! while `more` is true.
//!
//! - Keys ascending; `prefix` (keys starting with it), `start` (keys at or
//!   after it: etcd's `key`) and `range_end` (keys before it, exclusive)
//!   narrow the listing and combine (all must hold).
//! - `limit` (default 100) is `1..=list_limit_max` (1000, the state
//!   machine's limit, which the CLI pages by too); past it, 400.
//! - Paging: while `more` is true the answer names `next`, the last key it
//!   returned; the same request with `after=NEXT` added gets the next page
//!   (keys strictly after it). Each page is its own read: a key written
//!   between pages shows up if it sorts after the cursor.
//! - `keys_only=true`: the KVs carry no `value`.
//! - `count_only=true`: `{"count": N, "more", "revision"}` and no KVs: the
//!   number of keys in the range, counted in one read of at most
//!   [`COUNT_PAGES_MAX`] × `list_limit_max` keys; past that `more` is true
//!   and `next` is the last key counted (continue with `after=NEXT`).
//!   `limit` does not apply to it (giving one is a 400).
//! - `more` says keys remain in the range beyond this answer; `revision`
//!   is the applied index the listing observed.
//!
//! `prefix`, `start`, `range_end` and `after` are bytes: percent-encoded
//! in the query (`%FF` is the byte 0xFF), so any key can be named. `next`
//! (like every key) is `next_b64` when it is not UTF-8.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use raftkv_state::{ListResponse, ReadCommand, Response as KvResponse};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::binary::encode_b64;
use super::kv_put::unexpected_kv;
use super::{Consistency, KvJson};
use crate::server::app::{Outcome, SharedApp};
use crate::server::error::ApiError;
use crate::server::extract::{NoBody, QueryParams, RequestInfo};
use crate::server::state::KvRead;

/// Default `limit`.
pub const LIST_LIMIT_DEFAULT: u64 = 100;

/// Most pages of `list_limit_max` keys one `count_only` request counts in
/// its single read (the read holds the state machine, so it is bounded).
pub const COUNT_PAGES_MAX: u64 = 100;

/// The parameters. The byte-valued ones are read from the raw query (see
/// [`query_bytes`]); serde only checks their names (and refuses repeats).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
// The byte-valued fields are only named here; their values are read from
// the raw query.
#[allow(dead_code)]
pub struct ListQuery {
    prefix: Option<IgnoredAny>,
    start: Option<IgnoredAny>,
    range_end: Option<IgnoredAny>,
    after: Option<IgnoredAny>,
    limit: Option<u64>,
    #[serde(default)]
    keys_only: bool,
    #[serde(default)]
    count_only: bool,
    #[serde(default)]
    consistency: Consistency,
}

/// The value of parameter `name` in `query`, percent-decoded to bytes
/// (`+` is a space, as in every form-encoded query).
fn query_bytes(query: &str, name: &str) -> Option<Bytes> {
    query.split('&').find_map(|pair| {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded: Vec<u8> =
            percent_encoding::percent_decode_str(&raw_name.replace('+', " ")).collect();
        (decoded == name.as_bytes()).then(|| {
            Bytes::from(
                percent_encoding::percent_decode_str(&raw_value.replace('+', " "))
                    .collect::<Vec<u8>>(),
            )
        })
    })
}

/// The key just after `key` in byte order: `key` followed by a 0 byte.
fn successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
}

/// One page of the listing through the store's read API.
fn read_page(kv: KvRead<'_>, read: &ReadCommand) -> Result<ListResponse, ApiError> {
    match kv.execute_read(read)? {
        KvResponse::List(list) => Ok(list),
        KvResponse::Rejected(e) => Err(e.into()),
        other => Err(unexpected_kv(&other)),
    }
}

/// What one read answers.
enum Listed {
    Page(ListResponse),
    Count {
        count: u64,
        more: bool,
        last: Option<Bytes>,
        revision: u64,
    },
}

/// Counts the keys of `read`'s range, page by page within one read, up to
/// `pages_max` pages.
fn count(kv: KvRead<'_>, mut read: ReadCommand, pages_max: u64) -> Result<Listed, ApiError> {
    let pages_max = pages_max.max(1);
    let mut count = 0u64;
    let mut page_no = 0u64;
    loop {
        page_no += 1;
        let page = read_page(kv, &read)?;
        count += page.kvs.len() as u64;
        let last = page.kvs.last().map(|kv| kv.key.clone());
        match (page.more, last) {
            (true, Some(last)) if page_no < pages_max => {
                if let ReadCommand::List { start, .. } = &mut read {
                    *start = Some(successor(&last));
                }
            }
            (more, last) => {
                return Ok(Listed::Count {
                    count,
                    more,
                    last: if more { last } else { None },
                    revision: page.revision,
                })
            }
        }
    }
}

/// Writes `key` as `name` or `name_b64`.
fn insert_key(map: &mut Map<String, Value>, name: &str, key: &[u8]) {
    match std::str::from_utf8(key) {
        Ok(s) => map.insert(name.to_string(), s.into()),
        Err(_) => map.insert(format!("{name}_b64"), encode_b64(key).into()),
    };
}

pub async fn handle(
    State(app): State<SharedApp>,
    info: RequestInfo,
    QueryParams(query): QueryParams<ListQuery>,
    _: NoBody,
) -> Result<Response, ApiError> {
    let raw_query = info.uri.query().unwrap_or("");
    let prefix = query_bytes(raw_query, "prefix").unwrap_or_default();
    let start = query_bytes(raw_query, "start");
    let end = query_bytes(raw_query, "range_end");
    let after = query_bytes(raw_query, "after");
    if query.keys_only && query.count_only {
        return Err(ApiError::BadRequest(
            "give keys_only or count_only, not both".into(),
        ));
    }
    if query.count_only && query.limit.is_some() {
        return Err(ApiError::BadRequest(
            "count_only counts the whole range: limit does not apply to it".into(),
        ));
    }
    // The cursor: keys strictly after `after`, i.e. from its successor on;
    // with `start` too, the later of the two.
    let start = match (start, after.as_deref().map(successor)) {
        (Some(s), Some(a)) => Some(s.max(a)),
        (s, a) => s.or(a),
    };
    let limit = if query.count_only {
        app.kv_config.list_limit_max
    } else {
        query.limit.unwrap_or(LIST_LIMIT_DEFAULT)
    };
    let read = ReadCommand::List {
        prefix,
        limit,
        start,
        end,
    };
    read.check(&app.kv_config)?;
    let count_only = query.count_only;
    let listed = app
        .read_kv(&info, query.consistency.into(), |kv| {
            if count_only {
                count(kv, read, COUNT_PAGES_MAX)
            } else {
                read_page(kv, &read).map(Listed::Page)
            }
        })
        .await?;
    let listed = match listed {
        Outcome::Forwarded(r) => return Ok(r),
        Outcome::Local(listed) => listed?,
    };
    let mut body = Map::new();
    match listed {
        Listed::Page(list) => {
            let kvs: Vec<KvJson> = list
                .kvs
                .iter()
                .map(|kv| {
                    if query.keys_only {
                        KvJson::key_only(kv)
                    } else {
                        KvJson::from(kv)
                    }
                })
                .collect();
            // Serializing KvJson (strings and numbers) cannot fail.
            body.insert(
                "kvs".into(),
                serde_json::to_value(kvs).unwrap_or(Value::Null),
            );
            body.insert("more".into(), list.more.into());
            if let (true, Some(last)) = (list.more, list.kvs.last()) {
                insert_key(&mut body, "next", &last.key);
            }
            body.insert("revision".into(), list.revision.into());
        }
        Listed::Count {
            count,
            more,
            last,
            revision,
        } => {
            body.insert("count".into(), count.into());
            body.insert("more".into(), more.into());
            if let Some(last) = last {
                insert_key(&mut body, "next", &last);
            }
            body.insert("revision".into(), revision.into());
        }
    }
    Ok(Json(Value::Object(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_parameters_are_percent_decoded_from_the_raw_query() {
        let q = "limit=5&prefix=a%2Fb+c&after=%FF%00&start=";
        assert_eq!(query_bytes(q, "prefix"), Some(Bytes::from("a/b c")));
        assert_eq!(
            query_bytes(q, "after"),
            Some(Bytes::from_static(b"\xff\x00"))
        );
        assert_eq!(query_bytes(q, "start"), Some(Bytes::new()));
        assert_eq!(query_bytes(q, "range_end"), None);
        // Names are decoded too.
        assert_eq!(query_bytes("pre%66ix=x", "prefix"), Some(Bytes::from("x")));
    }

    /// A store holding keys k0..k{n-1}, listing at most 2 per page.
    fn store(n: u64) -> raftkv_state::KvStore {
        use raft_core::{Entry, EntryPayload, StateMachine};
        let config = raftkv_state::KvConfig {
            list_limit_max: 2,
            ..raftkv_state::KvConfig::default()
        };
        let mut kv = raftkv_state::KvStore::new(config).unwrap();
        for i in 0..n {
            let cmd = raftkv_state::Command::put(format!("k{i}"), "v");
            let entry = Entry {
                term: 1,
                index: i + 1,
                payload: EntryPayload::Normal(cmd.encode()),
            };
            kv.apply(&entry).unwrap();
        }
        kv
    }

    fn counted(kv: &raftkv_state::KvStore, pages_max: u64) -> (u64, bool, Option<Bytes>) {
        match count(KvRead::Memory(kv), ReadCommand::list("", 2), pages_max).unwrap() {
            Listed::Count {
                count, more, last, ..
            } => (count, more, last),
            Listed::Page(_) => panic!("a count answers a count"),
        }
    }

    #[test]
    fn counts_stop_at_the_page_budget_with_a_cursor() {
        // Within the budget: everything, no cursor.
        assert_eq!(counted(&store(5), 3), (5, false, None));
        assert_eq!(counted(&store(6), 3), (6, false, None));
        assert_eq!(counted(&store(0), 3), (0, false, None));
        // Over it: 3 pages of 2, and the last key counted as the cursor.
        assert_eq!(counted(&store(7), 3), (6, true, Some(Bytes::from("k5"))));
        // Resuming after the cursor counts the rest.
        let kv = store(7);
        let read = ReadCommand::List {
            prefix: Bytes::new(),
            limit: 2,
            start: Some(successor(b"k5")),
            end: None,
        };
        let Listed::Count {
            count: rest, more, ..
        } = count(KvRead::Memory(&kv), read, 3).unwrap()
        else {
            panic!("a count answers a count")
        };
        assert_eq!((rest, more), (1, false));
    }

    #[test]
    fn the_cursor_resumes_just_after_a_key() {
        assert_eq!(successor(b"a"), Bytes::from_static(b"a\0"));
        assert_eq!(successor(b""), Bytes::from_static(b"\0"));
    }
}
