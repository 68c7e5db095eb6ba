//! Bounded work per operation: a document's size, its aliases and its cost are checked
//! once it is parsed, before it is validated or run, for queries, mutations and
//! subscriptions alike.
//!
//! The cost is an upper bound of the fields a response can hold: every selected field
//! counts (aliases and `__typename` included), a connection multiplies what is selected
//! under it by its page size (`first`/`last`, 50 when absent, at most 200), and any
//! other list by [`LIST_ESTIMATE`]. Fragments count wherever they are spread, each
//! reckoned once, so a fragment that spreads another many times cannot make the
//! reckoning itself expensive.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{
    ExecutableDocument, Field, OperationType, Selection, SelectionSet,
};
use async_graphql::registry::{MetaTypeName, Registry};
use async_graphql::{ServerError, ServerResult, Value, Variables};

use super::error::code;
use super::{ClientIp, Viewer};
use crate::rate::{Caller, IpKey, RateLimits};

/// Longest query document accepted, in bytes. Real clients' documents are a few KB.
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024;
/// Most aliased fields one document may hold, counted wherever fragments spread them.
pub const MAX_ALIASES: u64 = 50;
/// What a list that is not a connection is assumed to hold (reactions, mentions, edits).
pub const LIST_ESTIMATE: u64 = 5;

const DEFAULT_PAGE: u64 = parley_projections::page::DEFAULT_PAGE as u64;
const MAX_PAGE: u64 = parley_projections::page::MAX_PAGE as u64;

/// The limits, as an async-graphql extension.
pub struct QueryLimits {
    pub max_cost: u64,
    /// Mutations count against their caller's rate limits here, once per field.
    pub rate: Arc<RateLimits>,
}

impl ExtensionFactory for QueryLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Check {
            max_cost: self.max_cost,
            rate: self.rate.clone(),
        })
    }
}

struct Check {
    max_cost: u64,
    rate: Arc<RateLimits>,
}

/// Mutations with limits of their own (they count failures or addresses).
const SELF_LIMITED: [&str; 2] = ["login", "register"];

/// The top-level mutation fields of the document: how many, and how many post messages.
fn mutations(document: &ExecutableDocument) -> (u32, u32) {
    let mut all = 0u32;
    let mut posts = 0u32;
    for (_, operation) in document.operations.iter() {
        if operation.node.ty != OperationType::Mutation {
            continue;
        }
        for selection in &operation.node.selection_set.node.items {
            if let Selection::Field(field) = &selection.node {
                let name = field.node.name.node.as_str();
                if SELF_LIMITED.contains(&name) {
                    continue;
                }
                all = all.saturating_add(1);
                if name == "sendMessage" {
                    posts = posts.saturating_add(1);
                }
            }
        }
    }
    (all, posts)
}

fn rate_limited(limited: crate::rate::Limited) -> ServerError {
    let seconds = limited.retry_after_secs();
    let mut error = ServerError::new(format!("too many requests; try again in {seconds} s"), None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", code::RATE_LIMITED);
    extensions.set("retryAfter", seconds);
    error.extensions = Some(extensions);
    error
}

fn refused(message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", code::BAD_USER_INPUT);
    error.extensions = Some(extensions);
    error
}

#[async_trait::async_trait]
impl Extension for Check {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if query.len() > MAX_DOCUMENT_BYTES {
            return Err(refused(format!(
                "the query document is {} bytes; at most {MAX_DOCUMENT_BYTES} are accepted",
                query.len()
            )));
        }
        let document = next.run(ctx, query, variables).await?;
        let tally = reckon(&document, &ctx.schema_env.registry, variables);
        if tally.aliases > MAX_ALIASES {
            return Err(refused(format!(
                "the query uses {} aliases; at most {MAX_ALIASES} are accepted",
                tally.aliases
            )));
        }
        if tally.cost > self.max_cost {
            return Err(refused(format!(
                "the query may cost {} (every field counts, and lists multiply what they \
                 select by their page size); at most {} is accepted: select fewer fields \
                 or ask for smaller pages",
                tally.cost, self.max_cost
            )));
        }
        let (all, posts) = mutations(&document);
        if all > 0 {
            let caller = match ctx.data_opt::<Viewer>() {
                Some(Viewer::User(user)) => Caller::User(*user),
                _ => Caller::Anonymous(IpKey::from(ctx.data_opt::<ClientIp>().map_or(
                    std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    |ip| ip.0,
                ))),
            };
            self.rate.mutate(caller, all, posts).map_err(rate_limited)?;
        }
        Ok(document)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub cost: u64,
    pub aliases: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.cost = self.cost.saturating_add(other.cost);
        self.aliases = self.aliases.saturating_add(other.aliases);
    }
}

/// The most expensive operation of `document`.
pub fn reckon(document: &ExecutableDocument, registry: &Registry, variables: &Variables) -> Tally {
    let mut walk = Walk {
        document,
        registry,
        variables,
        fragments: HashMap::new(),
        visiting: Vec::new(),
    };
    let mut worst = Tally::default();
    for (_, operation) in document.operations.iter() {
        let root = match operation.node.ty {
            OperationType::Query => Some(registry.query_type.as_str()),
            OperationType::Mutation => registry.mutation_type.as_deref(),
            OperationType::Subscription => registry.subscription_type.as_deref(),
        };
        let tally = walk.selection_set(&operation.node.selection_set.node, root.unwrap_or(""));
        worst.cost = worst.cost.max(tally.cost);
        worst.aliases = worst.aliases.max(tally.aliases);
    }
    worst
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    registry: &'a Registry,
    variables: &'a Variables,
    /// Each fragment's tally, reckoned once.
    fragments: HashMap<&'a str, Tally>,
    /// Fragments being reckoned, to stop at a cycle (validation refuses those later).
    visiting: Vec<&'a str>,
}

impl<'a> Walk<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet, parent: &str) -> Tally {
        let mut tally = Tally::default();
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => tally.add(self.field(&field.node, parent)),
                Selection::InlineFragment(fragment) => {
                    let on = fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(parent, |condition| condition.node.on.node.as_str());
                    let inner = self.selection_set(&fragment.node.selection_set.node, on);
                    tally.add(inner);
                }
                Selection::FragmentSpread(spread) => {
                    tally.add(self.fragment(spread.node.fragment_name.node.as_str()));
                }
            }
        }
        tally
    }

    fn fragment(&mut self, name: &'a str) -> Tally {
        if let Some(tally) = self.fragments.get(name) {
            return *tally;
        }
        if self.visiting.contains(&name) {
            return Tally::default();
        }
        let Some(definition) = self.document.fragments.get(name) else {
            return Tally::default();
        };
        self.visiting.push(name);
        let on = definition.node.type_condition.node.on.node.as_str();
        let tally = self.selection_set(&definition.node.selection_set.node, on);
        self.visiting.pop();
        self.fragments.insert(name, tally);
        tally
    }

    fn field(&mut self, field: &'a Field, parent: &str) -> Tally {
        let mut tally = Tally {
            cost: 1,
            aliases: u64::from(field.alias.is_some()),
        };
        if field.selection_set.node.items.is_empty() {
            return tally;
        }
        let ty = self
            .registry
            .types
            .get(parent)
            .and_then(|meta| meta.field_by_name(field.name.node.as_str()))
            .map(|meta| meta.ty.as_str())
            .unwrap_or_default();
        let named = MetaTypeName::concrete_typename(ty);
        let inner = self.selection_set(&field.selection_set.node, named);
        let times = if named.ends_with("Connection") {
            self.page_size(field)
        } else if parent.ends_with("Connection") {
            // `edges` and `nodes`: their connection already counted the page.
            1
        } else if MetaTypeName::create(ty).is_list() {
            LIST_ESTIMATE
        } else {
            1
        };
        tally.cost = tally.cost.saturating_add(times.saturating_mul(inner.cost));
        tally.aliases = tally.aliases.saturating_add(inner.aliases);
        tally
    }

    /// The page a connection field asks for: `first` or `last`, literal or variable.
    fn page_size(&self, field: &Field) -> u64 {
        let requested = ["first", "last"]
            .iter()
            .filter_map(|name| field.get_argument(name))
            .filter_map(|value| {
                value
                    .node
                    .clone()
                    .into_const_with(|name| self.variables.get(&name).cloned().ok_or(()))
                    .ok()
            })
            .filter_map(|value| match value {
                Value::Number(n) => n.as_i64(),
                _ => None,
            })
            .max();
        match requested {
            Some(n) => u64::try_from(n).unwrap_or(0).min(MAX_PAGE),
            None => DEFAULT_PAGE,
        }
    }
}
